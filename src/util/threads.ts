// How many worker threads the data-moving commands (build's weight writer, convert's rank files) use.

import { availableParallelism } from 'node:os';
import { InputError } from '../core/errors.js';
import { EVENTS_ENV } from './events.js';

/**
 * TPRUN_BUILD_THREADS when set (0: none, everything on the main thread), else every core this process
 * may use (os.availableParallelism: the affinity mask, cgroup quotas aside), at most `cap`.
 */
export function workerThreads(cap = 16, env: NodeJS.ProcessEnv = process.env): number {
  const set = env.TPRUN_BUILD_THREADS;
  if (set !== undefined && set !== '') {
    const n = Number(set);
    if (!Number.isInteger(n) || n < 0) throw new InputError(`TPRUN_BUILD_THREADS=${set}: must be a whole number >= 0`);
    return Math.min(n, 32);
  }
  return Math.min(cap, availableParallelism());
}

/**
 * The environment of a worker thread: this process's, less what makes a thread report to the launcher
 * or write a trace at exit (those are the process's, and the main thread's spans cover the workers').
 */
export function workerEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== 'TPRUN_TRACE' && k !== EVENTS_ENV) env[k] = v;
  return { ...env, ...extra };
}
