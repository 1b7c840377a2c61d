// Issue #11 item 8 (rank part): a rank SIGTERMed during start-up (while its peers have not opened its
// /dev/shm ring file yet, e.g. waiting at the rendezvous) must remove the file; a started world must
// leave no process-wide signal handlers behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { jobEnv, startRank, until } from './rank-spawn.js';

const ringsOf = (pid) => readdirSync('/dev/shm').filter((f) => f.startsWith('tprun-') && f.includes(`-${pid}-`));

for (const sig of /** @type {const} */ (['SIGTERM', 'SIGINT', 'SIGHUP'])) {
  test(`a rank ${sig}ed while waiting at the rendezvous removes its ring file and dies of the signal`, async () => {
    const env = await jobEnv(2, { APP_TIMEOUT_MS: '30000' });
    const r0 = startRank(0, env, ['hello']); // rank 1 never comes
    try {
      await until(() => ringsOf(r0.pid).length > 0, 30000, 'rank 0 to create its ring file');
      r0.proc.kill(sig);
      await r0.exited;
      assert.equal(r0.signal, sig, r0.stderr);
      assert.deepEqual(ringsOf(r0.pid), []);
    } finally {
      r0.proc.kill('SIGKILL');
    }
  });
}

test('a world that has started keeps no signal or exit handlers of its own', async () => {
  const env = await jobEnv(2);
  const rs = [startRank(0, env, ['hello']), startRank(1, env, ['hello'])];
  await Promise.all(rs.map((r) => r.exited));
  for (const r of rs) {
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.lines()[0].handlers, { SIGTERM: 0, SIGINT: 0, SIGHUP: 0, exit: 0 });
    assert.deepEqual(ringsOf(r.pid), []);
  }
});
