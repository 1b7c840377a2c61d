// How many more file descriptors this process may open (Linux: /proc/self/limits and /proc/self/fd).
//
// Needed before starting an ssh rank: execa (9.6) cannot survive a spawn that fails with EMFILE (node
// returns a child without stdio and emits 'error'; execa throws `subprocess.stdio is not iterable` and
// leaves that 'error' unhandled, which kills the launcher with the ranks it started orphaned). Local ranks
// use node's spawn, which reports EMFILE as an error; ssh ranks are not started without room for their pipes.
import { readdirSync, readFileSync } from 'node:fs';

let limit: number | undefined | null = null;

function softLimit(): number | undefined {
  if (limit === null) {
    try {
      const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
      limit = m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
    } catch {
      limit = undefined;
    }
  }
  return limit;
}

/** Descriptors left under the soft limit, or undefined where that cannot be told (then: assume enough). */
export function fdHeadroom(): number | undefined {
  const max = softLimit();
  if (max === undefined) return undefined;
  try {
    // readdir's own descriptor is in the list: it is free again afterwards.
    return max - (readdirSync('/proc/self/fd').length - 1);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EMFILE' ? 0 : undefined;
  }
}
