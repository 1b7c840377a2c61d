// CPU binding of a rank, as mpirun does by default. Ranks that busy-poll shared memory only meet quickly
// when they run at the same time on different cores; left to the scheduler, two ranks of a loaded
// machine often share one core and each message then waits for a time slice (measured here: a 1 KiB
// ping-pong took 13 ms unbound, 0.7 ms bound, on a 2-core machine at full load).
// Local rank r gets the r-th equal slice of the CPUs this process may use, so a rank keeps several
// cores for its own threads (onnxruntime's) when there are more cores than ranks.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { detectIdentity } from './identity.js';
import { oneOf } from '../util/env.js';

/** The slice this process bound itself to (bindLocalRank), if it did: its cores are then its own, where
 *  unbound local ranks share the machine's (rankCores below divides them). Kept on a global
 *  symbol: the world that binds runs from its bundle (./world.ts) while the engine reads this module as an
 *  ES module, and both copies must see the one process's binding (as ./comm-error.ts's class). */
const BOUND = Symbol.for('tprun.boundSlice');
const shared = globalThis as { [BOUND]?: number[] };
export const boundSlice = (): number[] | undefined => shared[BOUND];

/** CPUs in a list like "0-3,8,10-11". */
export function parseCpuList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.trim().split(',')) {
    if (!part) continue;
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out;
}

export function allowedCpus(): number[] | undefined {
  try {
    const m = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? parseCpuList(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The slice of `cpus` for local rank `r` of `n`, or undefined when there are fewer CPUs than ranks. */
export function sliceFor(cpus: number[], r: number, n: number): number[] | undefined {
  if (n < 2 || cpus.length < n) return undefined;
  const k = Math.floor(cpus.length / n);
  return cpus.slice(r * k, (r + 1) * k);
}

/**
 * Binds this process (all its threads) to its slice unless TPRUN_BIND=none, or someone (mpirun, srun,
 * a cpuset) already narrowed it: then it is left as it is. Returns the CPUs bound to, if any.
 */
export function bindLocalRank(localRank: number, localSize: number, env: Record<string, string | undefined>): number[] | undefined {
  if (oneOf('TPRUN_BIND', ['none'], env) === 'none' || process.platform !== 'linux') return undefined;
  const cpus = allowedCpus();
  if (!cpus) return undefined;
  // Already bound by a launcher: the process sees fewer CPUs than the machine has online.
  let online: number[] | undefined;
  try { online = parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8')); } catch { /* unknown */ }
  if (online && cpus.length < online.length) return undefined;
  const mine = sliceFor(cpus, localRank, localSize);
  if (!mine) return undefined;
  try {
    execFileSync('taskset', ['-a', '-p', '-c', mine.join(','), String(process.pid)], { stdio: 'ignore', timeout: 5000 });
    shared[BOUND] = mine;
    return mine;
  } catch {
    return undefined; // no taskset (util-linux): run unbound
  }
}

/**
 * The cores one rank may use for its own threads: those of its affinity mask when tprun bound it to its
 * slice (bindLocalRank), else that mask's share among the ranks of its node, which run
 * at the same time on the same cores (unbound: TPRUN_BIND=none, more ranks than cores, or a launcher
 * that narrowed the whole job). The local size is the launcher's (./identity.ts: TPRUN_LOCAL_WORLD_SIZE,
 * Open MPI's, Slurm's, PMI's); 1 outside a world. At least 1. As onnxruntime's thread count divides
 * them (engine/runtime.ts defaultThreads). Here, beside the binding it reads (util/ stands below rank/).
 */
export function rankCores(env: NodeJS.ProcessEnv = process.env, cores = availableParallelism(), bound = boundSlice() !== undefined): number {
  if (bound) return Math.max(1, cores);
  let local = 1;
  try { local = detectIdentity(env).localSize; } catch { /* a malformed world fails where the world starts */ }
  return Math.max(1, Math.floor(cores / Math.max(1, local)));
}
