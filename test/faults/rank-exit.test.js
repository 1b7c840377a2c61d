// Issue #11 item 10: a script that never calls world.close() ends when its last line has run, as
// mpi4py and torch.distributed scripts do (the world closes itself, bounded, once nothing else is left).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobEnv, startRanks, until } from './rank-spawn.js';

for (const transport of ['shm', 'zmq']) {
  test(`a 2-rank script that omits close() exits 0 after its last line (${transport})`, async () => {
    const env = await jobEnv(2, { TPRUN_TRANSPORT: transport });
    const rs = startRanks(2, env, ['noclose']);
    try {
      // A hang guard: such a script used to stay alive forever.
      await until(() => rs.every((r) => r.code !== null || r.signal !== null), 40000, 'both ranks to exit on their own');
      for (const r of rs) {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.lines().find((l) => 'sum' in l).sum, 3);
      }
    } finally {
      for (const r of rs) r.proc.kill('SIGKILL');
    }
  });
}

test('under tprun, a job whose script omits close() ends with exit 0 and leaves nothing behind', async () => {
  const { runTprun } = await import('../helpers/procs.js');
  const { APP } = await import('./rank-spawn.js');
  const res = await runTprun(['-n', '2', '--gpus', 'none', '--timeout', '40', '--', process.execPath, APP, 'noclose']);
  assert.equal(res.code, 0, res.stderr);
  assert.equal((res.stdout.match(/"sum":3/g) ?? []).length, 2, res.stdout);
  assert.deepEqual(res.left, []);
});
