// CPU binding of a rank, as mpirun does by default. Ranks that busy-poll shared memory only meet quickly
// when they run at the same time on different cores; left to the scheduler, two ranks of a loaded
// machine often share one core and each message then waits for a time slice (measured here: a 1 KiB
// ping-pong took 13 ms unbound, 0.7 ms bound, on a 2-core machine at full load).
// Local rank r gets the r-th equal slice of the CPUs this process may use, so a rank keeps several
// cores for its own threads (onnxruntime's) when there are more cores than ranks.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
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
 * Binds this process (all its threads) to its slice of its CPUs unless TPRUN_BIND=none, or a launcher
 * (mpirun, srun) already bound it to CPUs of its own (ownMask): then it is left as it is. A mask that
 * is the job's as a whole (a container's or a Slurm job's cpuset, `taskset -c 0-3 mpirun --bind-to none`)
 * is divided like the machine's. Returns the CPUs bound to, if any.
 */
export function bindLocalRank(localRank: number, localSize: number, env: Record<string, string | undefined>): number[] | undefined {
  if (oneOf('TPRUN_BIND', ['none'], env) === 'none' || process.platform !== 'linux') return undefined;
  const cpus = allowedCpus();
  const mine = bindingFor(localRank, localSize, cpus, ownJobWide(sourceOf(env), cpus)?.length);
  if (!mine) return undefined;
  try {
    execFileSync('taskset', ['-a', '-p', '-c', mine.join(','), String(process.pid)], { stdio: 'ignore', timeout: 5000 });
    shared[BOUND] = mine;
    return mine;
  } catch {
    return undefined; // no taskset (util-linux): run unbound
  }
}

/** The slice bindLocalRank binds to: none where the mask is the rank's own (ownMask) or too small to share. */
export function bindingFor(localRank: number, localSize: number, cpus: number[] | undefined, jobWide: number | undefined): number[] | undefined {
  if (!cpus || ownMask(cpus.length, jobWide ?? cpus.length, localSize)) return undefined;
  return sliceFor(cpus, localRank, localSize);
}

/**
 * Whether a rank's affinity mask of `mask` CPUs was set for that rank alone (mpirun's binding, srun
 * --cpu-bind, a taskset or numactl per rank, also under tprun's launcher: `tprun -n 2 -- sh -c 'numactl
 * --cpunodebind=$TPRUN_LOCAL_RANK node app'`) rather than for its whole job, whose ranks then share it.
 * The one rule both the binding (bindLocalRank) and the thread counts (rankCores) follow. Per rank:
 * narrower than the CPUs the job may use (`jobWide`, jobWideCpus: its launcher's mask, tprun's as
 * mpirun's, else its cgroup's cpuset, else the online CPUs) and narrow enough that the node's ranks'
 * masks fit in them side by side (mpirun -np 4 --map-by slot:PE=4 on 16 cores: yes; `taskset -c 0-7
 * mpirun -np 4 --bind-to none` judged against the online CPUs alone: no). A mask equal to the
 * launcher's (`taskset -c 0-3 tprun -n 2`, a container's cpuset) is the whole job's: split.
 */
export function ownMask(mask: number, jobWide: number, localSize: number): boolean {
  return mask < jobWide && Math.max(1, localSize) * mask <= jobWide;
}

const sourceOf = (env: NodeJS.ProcessEnv): string => {
  try { return detectIdentity(env).source; } catch { return 'single'; } // a malformed world fails where the world starts
};

/** The variable each launcher sets for its ranks only (./identity.ts reads them): an ancestor without it
 *  is the launcher (or something above it). */
const RANK_VAR: Record<string, string> = { tprun: 'TPRUN_RANK', openmpi: 'OMPI_COMM_WORLD_RANK', slurm: 'SLURM_PROCID', pmi: 'PMI_RANK' };

/**
 * The affinity mask of the process that launched this rank (Open MPI's prted/orted or mpirun, MPICH's
 * hydra proxy, slurmstepd): the nearest ancestor whose environment lacks the rank variable of `source`
 * (a wrapper such as `sh -c` or npx between them carries it), or whose environment is not ours to read
 * (slurmstepd runs as root). A rank whose mask is its launcher's was not bound by it; a launcher started
 * under `taskset` has the narrowed mask too, which its ranks then share. Undefined where /proc does not
 * tell. `root` stands in for / and `pid` for this process's parent (tests).
 */
export function launcherCpus(source: string, root = '', pid = process.ppid): number[] | undefined {
  return launcherOf(source, root, pid)?.cpus;
}

/** launcherCpus's launcher: its pid and mask. */
function launcherOf(source: string, root: string, pid: number): { pid: number; cpus: number[] } | undefined {
  const key = RANK_VAR[source];
  if (!key) return undefined;
  // PID 1 is read too: in a container (or `unshare --pid`) whose entrypoint is mpirun, it is the launcher.
  for (let depth = 0; pid >= 1 && depth < 16; depth++) {
    let status: string;
    try { status = readFileSync(`${root}/proc/${pid}/status`, 'utf8'); } catch { return undefined; }
    if (!hasVar(root, pid, key)) {
      const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(status);
      return m ? { pid, cpus: parseCpuList(m[1]) } : undefined;
    }
    pid = Number(/^PPid:\s*(\d+)/m.exec(status)?.[1] ?? 0);
  }
  return undefined;
}

/** Whether process `pid`'s environment has `key`; false where it is not ours to read (another user's). */
function hasVar(root: string, pid: number, key: string): boolean {
  let environ: string;
  try { environ = readFileSync(`${root}/proc/${pid}/environ`, 'latin1'); } catch { return false; }
  return environ.split('\0').some((kv) => kv.startsWith(`${key}=`));
}

/**
 * Whether another rank of this node, a child of the same launcher (`launcher`: its pid and mask) with the
 * rank variable of `source`, has a mask narrower than the launcher's that overlaps `mine`: the mask was
 * then set for the job as a whole below the launcher (`mpirun --cpu-set 0-3 --bind-to none`, which Open
 * MPI applies to each rank it starts), not per rank, and the ranks share it. What this still cannot see:
 * ranks not started yet when this one looks (a launcher starts them together, so rarely); ranks behind a
 * wrapper that kept the launcher's mask (`sh -c 'taskset ...'`: the wrapper is the launcher's child);
 * ranks of another launcher on the node; ranks in another PID namespace.
 */
function siblingsShare(source: string, root: string, launcher: { pid: number; cpus: number[] }, mine: number[], self: number): boolean {
  const key = RANK_VAR[source];
  const own = new Set(mine);
  let pids: string[];
  try { pids = readdirSync(`${root}/proc`).filter((d) => /^\d+$/.test(d)); } catch { return false; }
  for (const d of pids) {
    const pid = Number(d);
    if (pid === self) continue;
    let status: string;
    try { status = readFileSync(`${root}/proc/${d}/status`, 'utf8'); } catch { continue; }
    if (Number(/^PPid:\s*(\d+)/m.exec(status)?.[1]) !== launcher.pid || !hasVar(root, pid, key)) continue;
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(status);
    const theirs = m ? parseCpuList(m[1]) : [];
    if (theirs.length < launcher.cpus.length && theirs.some((c) => own.has(c))) return true;
  }
  return false;
}

/**
 * The CPUs this rank's job may use, what ownMask compares a rank's mask with: its launcher's mask where
 * /proc tells it (within the cgroup's cpuset: a launcher outside the job's cgroup, slurmstepd, may have
 * more), else the cgroup's cpuset or the online CPUs (jobCpus). Given this rank's mask (`mine`), a mask
 * that another rank of the launcher shares (siblingsShare) is the job's: then `mine` itself, which ownMask
 * splits. `root`, `pid` and `self` stand in for /, this process's parent and this process (tests).
 */
export function jobWideCpus(source: string, root = '', pid = process.ppid, mine?: number[], self = process.pid): number[] | undefined {
  const launcher = launcherOf(source, root, pid);
  const job = jobCpus(root);
  if (!launcher) return job;
  if (mine && mine.length < launcher.cpus.length && siblingsShare(source, root, launcher, mine, self)) return mine;
  const inJob = job ? launcher.cpus.filter((c) => job.includes(c)) : launcher.cpus;
  return inJob.length > 0 ? inJob : launcher.cpus;
}

/** This process's jobWideCpus, found once per mask: bindLocalRank and every rankCores (the runtime's and
 *  the build's thread counts) ask, and its launcher and siblings do not change while it runs, so the
 *  walk up /proc and the scan of its siblings are not repeated. */
let ownWide: { key: string; cpus: number[] | undefined } | undefined;
function ownJobWide(source: string, mine: number[] | undefined): number[] | undefined {
  const key = `${source} ${mine?.join(',')}`;
  if (ownWide?.key !== key) ownWide = { key, cpus: jobWideCpus(source, '', process.ppid, mine) };
  return ownWide.cpus;
}

/**
 * How many CPUs this rank's job may use (jobWideCpus; where /proc says nothing, this rank's own mask, else
 * the machine's): what ranksOutnumberCpus and rankCores both count ranks against. `root`, `pid` and `self`
 * stand in for /, this process's parent and this process (tests; without them, this process's, found once).
 */
export function jobWideCount(source: string, mine = allowedCpus(), root?: string, pid?: number, self?: number): number {
  const wide = root === undefined ? ownJobWide(source, mine) : jobWideCpus(source, root, pid, mine, self);
  return wide?.length ?? mine?.length ?? availableParallelism();
}

/**
 * Whether this node's `localSize` ranks outnumber the CPUs their job may use (jobWideCpus), i.e. some
 * local rank has no core of its own: what decides busy-polling and the allReduce areas' early set-up
 * (./peer-world.ts). Not this rank's own mask (availableParallelism): a rank that a launcher bound to one
 * core (mpirun --bind-to core, srun --cpu-bind=cores, `taskset -c $RANK`) has a core, and its peers theirs.
 * A mask the job shares (a cpuset, `taskset -c 0 tprun -n 2`) is the job's CPUs themselves. Read before
 * bindLocalRank narrows the mask; the same walk of /proc as its (ownJobWide, done once). `mine` and
 * `jobWide` (a count) are for tests.
 */
export function ranksOutnumberCpus(localSize: number, source: string, mine = allowedCpus(), jobWide?: number): boolean {
  return localSize > (jobWide ?? jobWideCount(source, mine));
}

/** The CPU list in `file`, or undefined where it cannot be read. */
function cpuListAt(file: string): number[] | undefined {
  try {
    const cpus = parseCpuList(readFileSync(file, 'utf8'));
    return cpus.length > 0 ? cpus : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The CPUs this process could be given: its cgroup's cpuset (a container's --cpuset-cpus, a Slurm job's
 * allocation), else the machine's online CPUs. What an affinity mask is narrower than when a launcher
 * bound this rank itself (mpirun, srun --cpu-bind, taskset: sched_setaffinity), where a container or a
 * job's cpuset narrows every process in it alike. The cgroup's own file, or its nearest parent's where
 * the cpuset controller is not enabled below (cgroup v2: cpuset.cpus.effective; v1: cpuset.effective_cpus,
 * as the kernel's Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/cpusets.rst name them).
 * `root` stands in for / (tests).
 */
export function jobCpus(root = ''): number[] | undefined {
  const lookUp = (dir: string, path: string, name: string): number[] | undefined => {
    for (let p = path.replace(/\/+$/, ''); ; p = p.slice(0, p.lastIndexOf('/'))) {
      const cpus = cpuListAt(`${dir}${p}/${name}`);
      if (cpus || p === '') return cpus;
    }
  };
  let cgroups = '';
  try { cgroups = readFileSync(`${root}/proc/self/cgroup`, 'utf8'); } catch { /* not Linux */ }
  const v2 = /^0::(\/.*)$/m.exec(cgroups)?.[1];
  const v1 = /^\d+:[^:]*\bcpuset\b[^:]*:(\/.*)$/m.exec(cgroups)?.[1];
  return (v1 !== undefined ? lookUp(`${root}/sys/fs/cgroup/cpuset`, v1, 'cpuset.effective_cpus') : undefined)
    ?? (v2 !== undefined ? lookUp(`${root}/sys/fs/cgroup`, v2, 'cpuset.cpus.effective') : undefined)
    ?? cpuListAt(`${root}/sys/devices/system/cpu/online`);
}

/**
 * The cores one rank may use for its own threads, as onnxruntime's thread count divides them
 * (engine/runtime.ts defaultThreads). `mask` is the size of its affinity mask, `jobWide` the number of
 * CPUs its job may use (jobWideCpus). The mask is the rank's own, used whole, when tprun bound it to its
 * slice (bindLocalRank), or when a launcher bound it (ownMask: 4 ranks of 4 CPUs on 16 cores, where
 * dividing again left each rank 1 thread). Otherwise it is the share among the ranks of its node, which
 * run at the same time on the same cores (unbound: TPRUN_BIND=none, more ranks than cores, or a mask
 * that is the whole job's: `taskset -c 0-7` of a 4-rank job on 16 cores, a container's cpuset). The local
 * size is the launcher's (./identity.ts: TPRUN_LOCAL_WORLD_SIZE, Open MPI's, Slurm's, PMI's); 1 outside a
 * world. At least 1. Here, beside the binding it reads.
 * `mask`, `bound` and `jobWide` are for tests; a `mask` given without `jobWide` is the whole machine's.
 */
export function rankCores(env: NodeJS.ProcessEnv = process.env, mask?: number, bound = boundSlice() !== undefined, jobWide?: number): number {
  const cores = mask ?? availableParallelism();
  if (bound) return Math.max(1, cores);
  let local = 1;
  let source = 'single';
  try { ({ localSize: local, source } = detectIdentity(env)); } catch { /* a malformed world fails where the world starts */ }
  local = Math.max(1, local);
  jobWide ??= mask === undefined ? jobWideCount(source) : cores;
  if (ownMask(cores, jobWide, local)) return Math.max(1, cores);
  return Math.max(1, Math.floor(cores / local));
}
