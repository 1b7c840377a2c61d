// Loading command modules on demand (shared by the CLI's commands and `tprun bench`'s benchmarks).
import type { CommandModule } from 'yargs';

export type CommandLoader = (args: string[]) => Promise<CommandModule<any, any>>;
export const def = (m: { default: CommandModule<any, any> }): CommandModule<any, any> => m.default;

/** The module named `name` when there is one; all of them otherwise (help, or a typo yargs will report). */
export function loadCommands(from: Record<string, CommandLoader>, name: string | undefined, args: string[]): Promise<CommandModule<any, any>[]> {
  const picked = name !== undefined && Object.hasOwn(from, name) ? [name] : Object.keys(from);
  return Promise.all(picked.map((n) => from[n](args)));
}
