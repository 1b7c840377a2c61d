// How many worker threads the data-moving commands (build's weight writer, convert's rank files) use.

import { availableParallelism } from 'node:os';
import { InputError } from '../core/errors.js';
import { EVENTS_ENV } from './events.js';
import { boundSlice } from '../rank/affinity.js';
import { detectIdentity } from '../rank/identity.js';

/** Below this many cores the worker paths are not taken unless asked for (TPRUN_BUILD_THREADS). */
export const MIN_CORES = 4;

/**
 * TPRUN_BUILD_THREADS when set (0: none, everything on the main thread), else `cores` (by default every
 * core this process may use, os.availableParallelism: its affinity mask; a rank's share is rankCores)
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
 * The cores one rank may use for its own threads: those of its affinity mask when tprun bound it to its
 * slice (rank/affinity.ts bindLocalRank), else that mask's share among the ranks of its node, which run
 * at the same time on the same cores (unbound: TPRUN_BIND=none, more ranks than cores, or a launcher
 * that narrowed the whole job). The local size is the launcher's (rank/identity.ts: TPRUN_LOCAL_WORLD_SIZE,
 * Open MPI's, Slurm's, PMI's); 1 outside a world. At least 1. As onnxruntime's thread count divides
 * them (engine/runtime.ts defaultThreads).
 */
export function rankCores(env: NodeJS.ProcessEnv = process.env, cores = availableParallelism(), bound = boundSlice() !== undefined): number {
  if (bound) return Math.max(1, cores);
  let local = 1;
  try { local = detectIdentity(env).localSize; } catch { /* a malformed world fails where the world starts */ }
  return Math.max(1, Math.floor(cores / Math.max(1, local)));
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
