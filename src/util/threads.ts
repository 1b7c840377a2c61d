// How many worker threads the data-moving commands (build's weight writer, convert's rank files) use.

import { availableParallelism } from 'node:os';
import { InputError } from '../core/errors.js';
import { EVENTS_ENV } from './events.js';

/** Below this many cores the worker paths are not taken unless asked for (TPRUN_BUILD_THREADS). */
export const MIN_CORES = 4;

/**
 * TPRUN_BUILD_THREADS when set (0: none, everything on the main thread), else `cores` (by default every
 * core this process may use, os.availableParallelism: its affinity mask; a rank's share is rank/affinity.ts rankCores)
 * up to `cap`, or 0 below `minCores` (MIN_CORES
 * unless the caller says): on the shared 2-core machine convert's worker paths gained nothing over the
 * main-thread ones (whose main thread and libuv writes keep two cores busy already) and cost the
 * workers' start (issue #14: convert 2.9 vs 2.4 s, medians of 8 interleaved runs under load). The
 * build's weight writer takes its workers from 2 cores (weight-jobs.ts buildThreads says why).
 */
export function workerThreads(cap = 16, env: NodeJS.ProcessEnv = process.env, minCores = MIN_CORES, cores = availableParallelism()): number {
  const set = env.TPRUN_BUILD_THREADS;
  if (set !== undefined && set !== '') {
    const n = Number(set);
    if (!Number.isInteger(n) || n < 0) throw new InputError(`TPRUN_BUILD_THREADS=${set}: must be a whole number >= 0`);
    return Math.min(n, 32);
  }
  return cores < minCores ? 0 : Math.min(cap, cores);
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
