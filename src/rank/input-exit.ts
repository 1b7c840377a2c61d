// A rank whose initWorld() was given bad input (a TPRUN_* knob spelt wrong, say) ends the way tprun's own
// commands do: one line naming the option, exit 2. Left to Node, the InputError that the user's script
// did not catch printed a stack trace from every rank and exited 1, which the launcher reported as a crash.
import { type InputError, isInputError } from '../core/errors.js';

/** The InputErrors that exit 2 should they go uncaught, with their rank. A WeakMap, and one listener for the
 *  process: a listener per error piled up in a script that catches and retries (MaxListenersExceededWarning
 *  at the 11th), and a caught error must not be kept alive by it. */
const exitTwo = new WeakMap<object, number | undefined>();
let installed = false;

/**
 * Arranges that `e`, should it go uncaught (the usual script: `const world = await initWorld()` at the top
 * level), prints `tprun: rank R: <message>` and exits 2 instead of Node's stack trace and exit 1. A script
 * that catches it, or has its own 'uncaughtException' handler, sees nothing change. Node emits
 * 'uncaughtExceptionMonitor' before its own report, for top-level await rejections too (origin
 * 'unhandledRejection').
 */
export function exitTwoIfUncaught(e: unknown, rank: number | undefined): void {
  if (!isInputError(e)) return;
  exitTwo.set(e as object, rank);
  if (installed) return;
  installed = true;
  process.on('uncaughtExceptionMonitor', (err: unknown) => {
    if (typeof err !== 'object' || err === null || !exitTwo.has(err) || process.listenerCount('uncaughtException') > 0) return;
    const r = exitTwo.get(err);
    process.stderr.write(`tprun: ${r === undefined ? '' : `rank ${r}: `}${(err as Error).message}\n`);
    process.exit((err as Partial<InputError>).exitCode ?? 2);
  });
}
