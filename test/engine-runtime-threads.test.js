// How many threads a rank's onnxruntime sessions get by default (src/engine/runtime.ts defaultThreads):
// the rank's own cores. Bound by tprun to its slice of the CPUs (rank/affinity.ts bindLocalRank), the
// cores it sees are its own already and are taken as they are, as are those mpirun/srun bound it to
// (rank/affinity.ts rankCores tells that from a whole job narrowed); unbound ranks of one node share
// the machine's, so each takes its share.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { defaultThreads } from '../dist/engine/runtime.js';
import { jobCpus } from '../dist/rank/affinity.js';

const world = (size) => ({ TPRUN_RANK: '0', TPRUN_WORLD_SIZE: String(size), TPRUN_LOCAL_RANK: '0', TPRUN_LOCAL_WORLD_SIZE: String(size) });

test('defaultThreads: a bound rank keeps its slice whole; unbound ranks divide the node\'s cores', () => {
  assert.equal(defaultThreads(world(4), 4, true), 4, 'a slice of 4 cores divided again among 4 ranks');
  assert.equal(defaultThreads(world(4), 16, false), 4);
  assert.equal(defaultThreads(world(3), 16, false), 5);
  assert.equal(defaultThreads(world(8), 2, false), 1, 'at least one');
  assert.equal(defaultThreads({}, 16, false), 16, 'outside a world');
  // The local size from other launchers too (rank/identity.ts), as Open MPI's.
  assert.equal(defaultThreads({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1', OMPI_COMM_WORLD_LOCAL_SIZE: '4' }, 16, false), 4);
});

test('defaultThreads() with no arguments reads the binding the world made (the global symbol rank/affinity.ts keeps)', (t) => {
  const BOUND = Symbol.for('tprun.boundSlice');
  const saved = { bound: globalThis[BOUND], env: { ...process.env } };
  t.after(() => {
    if (saved.bound === undefined) delete globalThis[BOUND];
    else globalThis[BOUND] = saved.bound;
    for (const k of Object.keys(world(1))) if (saved.env[k] === undefined) delete process.env[k]; else process.env[k] = saved.env[k];
  });
  Object.assign(process.env, world(2));
  const cores = availableParallelism();
  // As bindLocalRank leaves it: this process's affinity mask is then its slice (here: whatever this
  // test process may use, standing in for the slice).
  globalThis[BOUND] = Array.from({ length: cores }, (_, i) => i);
  assert.equal(defaultThreads(), cores, 'the bound slice divided among the local ranks again');
  delete globalThis[BOUND];
  assert.equal(defaultThreads(), Math.max(1, Math.floor(cores / 2)));
});

// A rank that mpirun/srun (or a user's taskset) bound to CPUs of its own sees a mask narrower than the
// machine's online CPUs; a launcher (or cpuset) that narrowed the whole job gives every rank one mask.
const ompi = (size) => ({ OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: String(size), OMPI_COMM_WORLD_LOCAL_RANK: '0', OMPI_COMM_WORLD_LOCAL_SIZE: String(size) });

test('defaultThreads: a mask that is this rank\'s own (mpirun --map-by slot:PE=4) is used whole; one narrowed for the whole job is divided', () => {
  // 4 ranks on a 16-core host, each bound to 4 CPUs: 4 threads each, not 1.
  assert.equal(defaultThreads(ompi(4), 4, false, 16), 4);
  assert.equal(defaultThreads(ompi(2), 8, false, 16), 8, 'two ranks, 8 CPUs each');
  assert.equal(defaultThreads(ompi(4), 3, false, 16), 3, 'masks that leave CPUs over');
  // The whole job narrowed (taskset -c 0-7 mpirun -np 4, a job's cpuset): the ranks share the one mask.
  assert.equal(defaultThreads(ompi(4), 8, false, 16), 2);
  assert.equal(defaultThreads(ompi(4), 2, false, 4), 1, 'at least one');
  // Not narrowed: the machine's cores shared among the local ranks, as before.
  assert.equal(defaultThreads(ompi(4), 16, false, 16), 4);
  assert.equal(defaultThreads(ompi(4), 16, false), 4, 'a mask given alone is the whole machine');
  assert.equal(defaultThreads(ompi(1), 4, false, 16), 4, 'one local rank keeps its mask');
  // Under tprun's launcher the same rule, its mask being the launcher's: `taskset -c 0-3 tprun -n 4` gives
  // the ranks the launcher's mask (the job's, shared); a per-rank wrapper (numactl) a narrower one (kept).
  assert.equal(defaultThreads(world(4), 4, false, 4), 1);
  assert.equal(defaultThreads(world(2), 8, false, 8), 4);
  assert.equal(defaultThreads(world(2), 8, false, 16), 8);
  // Bound by tprun itself: its slice is its own whatever the counts.
  assert.equal(defaultThreads(ompi(4), 4, true, 16), 4);
});

test('jobCpus: the cgroup\'s cpuset (v2, or the nearest parent\'s; v1), else the online CPUs', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'tprun-cpus-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const put = (rel, text) => { mkdirSync(dirname(join(root, rel)), { recursive: true }); writeFileSync(join(root, rel), text); };
  put('sys/devices/system/cpu/online', '0-15\n');
  assert.deepEqual(jobCpus(root), Array.from({ length: 16 }, (_, i) => i), 'no cgroup file: the online CPUs');
  // cgroup v2, a container's cpuset on the parent; the cpuset controller not enabled in the leaf.
  put('proc/self/cgroup', '0::/docker/abc/init.scope\n');
  put('sys/fs/cgroup/docker/abc/cpuset.cpus.effective', '0-3,8\n');
  assert.deepEqual(jobCpus(root), [0, 1, 2, 3, 8]);
  // cgroup v1 (hybrid: its cpuset hierarchy holds the cpuset).
  put('proc/self/cgroup', '4:memory:/slurm/job1\n3:cpuset:/slurm/job1\n0::/\n');
  put('sys/fs/cgroup/cpuset/slurm/job1/cpuset.effective_cpus', '4-7\n');
  assert.deepEqual(jobCpus(root), [4, 5, 6, 7]);
});
