// Errors caused by the user's input (files, options). They carry exit code 2 and a one-line message that
// names the file / tensor / option at fault, so the CLI can print them verbatim and stop.

export class InputError extends Error {
  readonly exitCode = 2;
  constructor(message: string, options?: ErrorOptions) {
    // One line, always: multi-line messages would break per-rank output tagging and log greps.
    super(message.replace(/\s*\n\s*/g, ' '), options);
    this.name = 'InputError';
  }
}

export function isInputError(e: unknown): e is InputError {
  return e instanceof InputError || (typeof e === 'object' && e !== null && (e as any).name === 'InputError');
}
