// A rank whose initWorld() was given bad input (a TPRUN_* knob spelt wrong, say) ends the way tprun's own
// commands do: one line naming the option, exit 2. Left to Node, the InputError that the user's script
// did not catch printed a stack trace from every rank and exited 1, which the launcher reported as a crash.
import { isInputError } from '../core/errors.js';

/**
 * Arranges that `e`, should it go uncaught (the usual script: `const world = await initWorld()` at the top
 * level), prints `tprun: rank R: <message>` and exits 2 instead of Node's stack trace and exit 1. A script
 * that catches it, or has its own 'uncaughtException' handler, sees nothing change. Node emits
 * 'uncaughtExceptionMonitor' before its own report, for top-level await rejections too (origin
 * 'unhandledRejection').
 */
export function exitTwoIfUncaught(e: unknown, rank: number | undefined): void {
  if (!isInputError(e)) return;
  const monitor = (err: unknown) => {
    if (err !== e || process.listenerCount('uncaughtException') > 0) return;
    process.stderr.write(`tprun: ${rank === undefined ? '' : `rank ${rank}: `}${(e as Error).message}\n`);
    process.exit(2);
  };
  process.on('uncaughtExceptionMonitor', monitor);
}
