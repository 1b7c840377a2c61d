// Whether a rank's CPU mask is its own (a launcher bound it) or its whole job's (a container's or Slurm
// job's cpuset, a launcher started under taskset): one rule (rank/affinity.ts ownMask) for both the
// binding (bindLocalRank) and the thread counts (rankCores). Before it, bindLocalRank compared the mask
// with the ONLINE CPUs: inside a cpuset container tprun never bound its ranks, and under mpirun a whole
// job narrowed by taskset read as bound per rank. CPU lists, cgroup files and /proc are injected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { bindLocalRank, bindingFor, jobWideCount, jobWideCpus, launcherCpus, ownMask, ranksOutnumberCpus } from '../dist/rank/affinity.js';
import { defaultThreads } from '../dist/engine/runtime.js';

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const ompi = (r, size) => ({ OMPI_COMM_WORLD_RANK: String(r), OMPI_COMM_WORLD_SIZE: String(size), OMPI_COMM_WORLD_LOCAL_RANK: String(r), OMPI_COMM_WORLD_LOCAL_SIZE: String(size) });
const tprun = (r, size) => ({ TPRUN_RANK: String(r), TPRUN_WORLD_SIZE: String(size), TPRUN_LOCAL_RANK: String(r), TPRUN_LOCAL_WORLD_SIZE: String(size) });

function fakeRoot(t) {
  const root = mkdtempSync(join(tmpdir(), 'tprun-affinity-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const put = (rel, text) => { mkdirSync(dirname(join(root, rel)), { recursive: true }); writeFileSync(join(root, rel), text); };
  const proc = (pid, ppid, cpus, env) => {
    put(`proc/${pid}/status`, `Name:\tx\nPPid:\t${ppid}\nCpus_allowed_list:\t${cpus}\n`);
    if (env) put(`proc/${pid}/environ`, Object.entries(env).map(([k, v]) => `${k}=${v}\0`).join(''));
  };
  return { root, put, proc };
}

test('ownMask: narrower than the job\'s CPUs and the node\'s masks fit side by side', () => {
  // A container's cpuset of 4 CPUs on a 16-CPU host: the job's CPUs are those 4, not the online 16.
  assert.equal(ownMask(4, 4, 2), false);
  assert.equal(ownMask(4, 4, 2), false);
  // mpirun -np 4 --map-by slot:PE=4 on 16 cores.
  assert.equal(ownMask(4, 16, 4), true);
  // taskset -c 0-3 mpirun -np 2 --bind-to none on 16 cores: against its launcher's mask (0-3), the job's.
  assert.equal(ownMask(4, 4, 2), false);
  // A whole job narrowed further than its ranks' masks could fit side by side.
  assert.equal(ownMask(8, 16, 4), false);
  // tprun's launcher is judged as mpirun is: `taskset -c 0-3 tprun -n 2` gives its ranks its own mask (the
  // job's: split), a per-rank wrapper (numactl --cpunodebind) a narrower one (the rank's own: kept).
  assert.equal(ownMask(4, 4, 2), false);
  assert.equal(ownMask(16, 32, 2), true);
});

test('under tprun\'s launcher a per-rank mask narrower than the launcher\'s is the user\'s own; equal to it, split', () => {
  // tprun -n 2 -- sh -c 'numactl --cpunodebind=$TPRUN_LOCAL_RANK node app' on two nodes of 16 CPUs: each
  // rank keeps its node (before: narrowed to half of it), and its threads use the whole node, also with
  // TPRUN_BIND=none (before: halved).
  assert.equal(bindingFor(1, 2, range(16, 31), 32), undefined);
  assert.equal(defaultThreads(tprun(1, 2), 16, false, 32), 16);
  // taskset -c 0-3 tprun -n 2: the ranks' mask is the launcher's, split between them.
  assert.deepEqual(bindingFor(1, 2, range(0, 3), 4), [2, 3]);
  assert.equal(defaultThreads(tprun(1, 2), 4, false, 4), 2);
});

test('bindingFor: a container\'s or a whole job\'s mask is divided; a launcher\'s per-rank mask is left alone', () => {
  // docker --cpuset-cpus=0-3 on a 16-CPU host, tprun -n 2: each rank gets its half (before: left unbound).
  assert.deepEqual(bindingFor(0, 2, range(0, 3), 4), [0, 1]);
  assert.deepEqual(bindingFor(1, 2, range(0, 3), 4), [2, 3]);
  // taskset -c 4-7 mpirun -np 2 --bind-to none: the launcher's mask is 4-7 too; the ranks split it.
  assert.deepEqual(bindingFor(1, 2, range(4, 7), 4), [6, 7]);
  // mpirun bound each rank to 4 of 16 cores: kept.
  assert.equal(bindingFor(1, 4, range(4, 7), 16), undefined);
  // The job's CPUs unknown: the mask is taken as the job's.
  assert.deepEqual(bindingFor(0, 2, range(0, 3), undefined), [0, 1]);
  assert.equal(bindingFor(0, 2, undefined, 4), undefined, 'no mask known: nothing to bind');
  assert.equal(bindingFor(0, 4, [0, 1], 2), undefined, 'more ranks than CPUs: left unbound');
});

test('rankCores (defaultThreads) follows the same rule: a container\'s cpuset is shared, a launcher\'s per-rank mask kept', () => {
  assert.equal(defaultThreads(tprun(0, 2), 4, false, 4), 2, 'tprun -n 2 in a 4-CPU container');
  assert.equal(defaultThreads(ompi(0, 2), 4, false, 4), 2, 'taskset -c 0-3 mpirun -np 2 --bind-to none');
  assert.equal(defaultThreads(ompi(0, 4), 4, false, 16), 4, 'mpirun --map-by slot:PE=4');
});

test('launcherCpus: the mask of the nearest ancestor without the rank variable (wrappers skipped; another user\'s process is the launcher)', (t) => {
  const { root, proc } = fakeRoot(t);
  // rank (parent 30: sh -c wrapper with the rank's variables) -> 20: prted, narrowed by taskset -> 1.
  proc(30, 20, '0-15', { ...ompi(0, 2), PATH: '/bin' });
  proc(20, 1, '0-3', { PATH: '/bin' });
  assert.deepEqual(launcherCpus('openmpi', root, 30), range(0, 3));
  // slurmstepd is root's: its environment cannot be read, its status can.
  proc(40, 1, '8-11');
  assert.deepEqual(launcherCpus('slurm', root, 40), range(8, 11));
  assert.equal(launcherCpus('openmpi', root, 99), undefined, 'no such process');
  assert.equal(launcherCpus('single', root, 30), undefined, 'no launcher outside a world');
});

test('launcherCpus: PID 1 is read too (a container whose entrypoint is mpirun)', (t) => {
  // `unshare --pid --fork --mount-proc taskset -c 0 mpirun -np 2 --bind-to none`: the rank's parent is PID 1.
  const { root, proc } = fakeRoot(t);
  proc(1, 0, '0', { PATH: '/bin' });
  proc(7, 1, '0', { ...ompi(0, 2), PATH: '/bin' });
  assert.deepEqual(launcherCpus('openmpi', root, 1), [0]);
  assert.deepEqual(launcherCpus('openmpi', root, 7), [0], 'through a wrapper');
  assert.deepEqual(jobWideCpus('openmpi', root, 1), [0]);
});

test('jobWideCpus: the launcher\'s mask, else the cgroup\'s cpuset, else the online CPUs', (t) => {
  const { root, put, proc } = fakeRoot(t);
  put('sys/devices/system/cpu/online', '0-15\n');
  put('proc/self/cgroup', '0::/docker/abc\n');
  put('sys/fs/cgroup/docker/abc/cpuset.cpus.effective', '0-7\n');
  proc(20, 1, '0-3', {});
  assert.deepEqual(jobWideCpus('openmpi', root, 20), range(0, 3));
  assert.deepEqual(jobWideCpus('openmpi', root, 99), range(0, 7), 'launcher unknown: the cgroup');
  assert.deepEqual(jobWideCpus('tprun', root, 20), range(0, 3), 'tprun\'s launcher as mpirun\'s');
  assert.deepEqual(jobWideCpus('tprun', root, 99), range(0, 7), 'tprun\'s launcher unknown: the cgroup');
  rmSync(join(root, 'sys/fs/cgroup'), { recursive: true });
  assert.deepEqual(jobWideCpus('single', root, 20), range(0, 15), 'no world, no cpuset: the online CPUs');
});

test('TPRUN_BIND=none binds nothing', () => {
  assert.equal(bindLocalRank(0, 2, { ...tprun(0, 2), TPRUN_BIND: 'none' }), undefined);
});

test('jobWideCpus: a mask that another rank of the launcher shares is the job\'s (mpirun --cpu-set), and the launcher\'s mask is taken within the cgroup\'s cpuset', (t) => {
  const { root, put, proc } = fakeRoot(t);
  put('sys/devices/system/cpu/online', '0-15\n');
  // mpirun --cpu-set 0-3 --bind-to none -np 2: prted (20) keeps 0-15, each rank it starts gets 0-3.
  proc(20, 1, '0-15', { PATH: '/bin' });
  proc(30, 20, '0-3', ompi(0, 2));
  proc(31, 20, '0-3', ompi(1, 2));
  const jw = jobWideCpus('openmpi', root, 20, range(0, 3), 30);
  assert.deepEqual(jw, range(0, 3), 'shared with rank 1: the job\'s');
  assert.deepEqual(bindingFor(0, 2, range(0, 3), jw.length), [0, 1], 'split, where each rank kept all 4 before');
  assert.equal(defaultThreads(ompi(0, 2), 4, false, jw.length), 2);
  // mpirun --bind-to core: the ranks' masks are disjoint, each its own.
  proc(31, 20, '4-7', ompi(1, 2));
  assert.deepEqual(jobWideCpus('openmpi', root, 20, range(0, 3), 30), range(0, 15));
  // A wrapper child that kept the launcher's mask is not a rank's binding.
  proc(31, 20, '0-15', ompi(1, 2));
  assert.deepEqual(jobWideCpus('openmpi', root, 20, range(0, 3), 30), range(0, 15));
  // A launcher outside the job's cgroup (slurmstepd) with more CPUs than the job's cpuset: within it.
  put('proc/self/cgroup', '0::/job\n');
  put('sys/fs/cgroup/job/cpuset.cpus.effective', '0-7\n');
  assert.deepEqual(jobWideCpus('openmpi', root, 20, range(0, 3), 30), range(0, 7));
});

// Whether local ranks outnumber cores (busy-polling, the allReduce areas' early set-up: rank/peer-world.ts)
// is judged against the job's CPUs: ranks a launcher bound to one core each were judged by their own
// one-CPU mask, oversubscribed, and lost both.
test('ranksOutnumberCpus: against the job\'s CPUs, not the rank\'s own mask', (t) => {
  const { root, put, proc } = fakeRoot(t);
  put('sys/devices/system/cpu/online', '0-1\n');
  // mpirun --bind-to core -np 2 on 2 cores: prted (20) keeps 0-1, each rank one core of its own.
  proc(20, 1, '0-1', { PATH: '/bin' });
  proc(30, 20, '0', ompi(0, 2));
  proc(31, 20, '1', ompi(1, 2));
  const bound = jobWideCpus('openmpi', root, 20, [0], 30);
  assert.deepEqual(bound, [0, 1]);
  assert.equal(ranksOutnumberCpus(2, 'openmpi', [0], bound.length), false, 'a core each');
  assert.equal(ranksOutnumberCpus(3, 'openmpi', [0], bound.length), true, '3 ranks on the job\'s 2 cores');
  // mpirun --cpu-set 0 --bind-to none -np 2: both ranks share core 0, the job's only CPU.
  proc(31, 20, '0', ompi(1, 2));
  const shared = jobWideCpus('openmpi', root, 20, [0], 30);
  assert.deepEqual(shared, [0]);
  assert.equal(ranksOutnumberCpus(2, 'openmpi', [0], shared.length), true, 'two ranks on one shared core');
  // Unbound on 2 cores, as before.
  assert.equal(ranksOutnumberCpus(2, 'openmpi', [0, 1], 2), false);
  assert.equal(ranksOutnumberCpus(3, 'openmpi', [0, 1], 2), true);
  // The count both ranksOutnumberCpus and rankCores use: the launcher's CPUs where /proc shows them.
  proc(31, 20, '1', ompi(1, 2));
  assert.equal(jobWideCount('openmpi', [0], root, 20, 30), 2, 'bound a core each: the launcher\'s 2');
  assert.equal(ranksOutnumberCpus(2, 'openmpi', [0], jobWideCount('openmpi', [0], root, 20, 30)), false);
});

test('jobWideCount: where /proc and /sys say nothing, the rank\'s own mask', (t) => {
  const { root } = fakeRoot(t);
  assert.equal(jobWideCount('openmpi', [0], root, 20, 30), 1);
  assert.equal(ranksOutnumberCpus(2, 'openmpi', [0], jobWideCount('openmpi', [0], root, 20, 30)), true, 'two ranks, one CPU');
  assert.equal(jobWideCount('openmpi', [0, 1, 2], root, 20, 30), 3);
  assert.equal(ranksOutnumberCpus(2, 'openmpi', [0, 1, 2], jobWideCount('openmpi', [0, 1, 2], root, 20, 30)), false);
});
