// How many threads a rank's onnxruntime sessions get by default (src/engine/runtime.ts defaultThreads):
// the rank's own cores. Bound by tprun to its slice of the CPUs (rank/affinity.ts bindLocalRank), the
// cores it sees are its own already and are taken as they are; unbound ranks of one node share the
// machine's, so each takes its share.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { defaultThreads } from '../dist/engine/runtime.js';

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
