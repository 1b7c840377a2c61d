// Sub-groups of a world (World.newGroup, as torch.distributed.new_group): real rank processes started by
// `tprun -n 4`; every rank checks each group collective against the exact result of the members' inputs
// (test/helpers/group-app.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { tprun, jsonLines } from './helpers/engine.js';

const APP = fileURLToPath(new URL('./helpers/group-app.js', import.meta.url));

test('two groups of 2 run their collectives concurrently with the right results; outsiders are refused', async () => {
  const r = await tprun(['-n', '4', '--gpus', 'none', '--timeout', '60', '--', process.execPath, APP, 'groups'], { timeoutMs: 90000 });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(jsonLines(r.stdout).map((l) => [l.rank, l.ok]).sort(), [[0, true], [1, true], [2, true], [3, true]]);
  assert.deepEqual(r.left, []);
});

test('the same over the network data plane (TPRUN_TRANSPORT=zmq)', async () => {
  const r = await tprun(['-n', '4', '--gpus', 'none', '--timeout', '60', '--', process.execPath, APP, 'groups'], { timeoutMs: 90000, env: { TPRUN_TRANSPORT: 'zmq' } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(jsonLines(r.stdout).filter((l) => l.ok).length, 4);
});

test('a group collective that a member never joins times out naming that world rank and the group', async () => {
  const r = await tprun(['-n', '4', '--gpus', 'none', '--timeout', '60', '--', process.execPath, APP, 'group-absent'], { timeoutMs: 90000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /barrier #1 in group 1 timed out after 1500 ms on rank 3: no data from rank 1/);
  assert.deepEqual(r.left, []);
});
