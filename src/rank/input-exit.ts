// A rank given bad input ends the way tprun's own commands do: one line naming the input and the rank,
// exit 2. Left to Node, an InputError that the user's script did not catch (from initWorld, a TPRUN_* knob
// spelt wrong, or from anything the script did with the world afterwards) printed a stack trace from every
// rank and exited 1, which the launcher reported as a crash. Other errors keep Node's report: a stack is
// what a bug needs.
import { type InputError, isInputError } from '../core/errors.js';

/** `message` naming rank `rank` as the one that met it, unless it names a rank already or there is no rank. */
export function namingRank(message: string, rank: number | undefined): string {
  return rank === undefined || /^rank \d+: /.test(message) ? message : `rank ${rank}: ${message}`;
}

/** The InputErrors that exit 2 should they go uncaught, with their rank. A WeakMap, and one listener for the
 *  process: a listener per error piled up in a script that catches and retries (MaxListenersExceededWarning
 *  at the 11th), and a caught error must not be kept alive by it. */
const exitTwo = new WeakMap<object, number | undefined>();
let installed = false;
/** Set once this process has joined a world: every uncaught InputError then exits 2, named by this rank. */
let joined: { rank: number | undefined } | undefined;

function install(): void {
  if (installed) return;
  installed = true;
  // Node emits 'uncaughtExceptionMonitor' before its own report, for top-level await rejections too (origin
  // 'unhandledRejection'). A script with its own 'uncaughtException' handler sees nothing change.
  process.on('uncaughtExceptionMonitor', (err: unknown) => {
    if (typeof err !== 'object' || err === null || process.listenerCount('uncaughtException') > 0) return;
    const known = exitTwo.has(err);
    if (!known && !(joined && isInputError(err))) return;
    const r = known ? exitTwo.get(err) : joined!.rank;
    process.stderr.write(`tprun: ${namingRank((err as Error).message, r)}\n`);
    process.exit((err as Partial<InputError>).exitCode ?? 2);
  });
}

/**
 * Arranges that `e`, should it go uncaught (the usual script: `const world = await initWorld()` at the top
 * level), prints `tprun: rank R: <message>` and exits 2 instead of Node's stack trace and exit 1. A script
 * that catches it sees nothing change.
 */
export function exitTwoIfUncaught(e: unknown, rank: number | undefined): void {
  if (!isInputError(e)) return;
  exitTwo.set(e as object, rank);
  install();
}

/**
 * This process is rank `rank` of a world (undefined: a world of one): from now on any InputError it leaves
 * uncaught (a collective given a bad argument, a damaged file the script opened) prints one line naming
 * the rank and exits 2, as exitTwoIfUncaught's do.
 */
export function exitTwoOnUncaughtInput(rank: number | undefined): void {
  joined = { rank };
  install();
}
