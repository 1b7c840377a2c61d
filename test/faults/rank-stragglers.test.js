// Issue #11 item 9: a rank that never calls initWorld() is named early (a one-line warning) and again
// when the configurable limit ends the wait; ranks that finish while a peer hangs do not sit in close().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobEnv, startRank, startRanks, until } from './rank-spawn.js';

test('a rank that never calls initWorld() is named after 10 s, then at the limit, on every rank that waits', async () => {
  const env = await jobEnv(3, { TPRUN_COMM_TIMEOUT_MS: '14000', APP_HANG_MS: '60000' });
  const rs = startRanks(3, env, ['noinit', '2']);
  try {
    await Promise.all([rs[0].exited, rs[1].exited]);
    const [r0, r1] = rs;
    const warn = r0.stderr.split('\n').filter((l) => /still waiting/.test(l));
    assert.equal(warn.length, 1, r0.stderr);
    assert.match(warn[0], /^tprun: rank 0: still waiting for rank 2 to join after 1\d s \(giving up after 14 s, TPRUN_COMM_TIMEOUT_MS\)$/);
    assert.equal(r0.code, 1);
    assert.match(r0.stderr, /rendezvous timed out after 14000 ms at rank 0: rank 2 did not arrive/);
    assert.equal(r1.code, 1);
    assert.match(r1.stderr, /rank 1: the rendezvous failed: rendezvous timed out after 14000 ms at rank 0: rank 2 did not arrive/);
    assert.doesNotMatch(r1.stderr, /still waiting|has not answered/, 'rank 0 answered rank 1: only rank 0 warns');
    assert.equal(rs[2].code, null, 'the straggler is still alive: the others gave up on their own');
  } finally {
    rs[2].proc.kill('SIGKILL');
  }
});

test('when rank 0 itself never arrives, the waiting ranks say so after 10 s', async () => {
  const env = await jobEnv(2, { TPRUN_COMM_TIMEOUT_MS: '12000', APP_HANG_MS: '60000' });
  const rs = startRanks(2, env, ['noinit', '0']);
  try {
    await rs[1].exited;
    assert.match(rs[1].stderr, /^tprun: rank 1: rank 0 has not answered at tcp:\/\/127\.0\.0\.1:\d+ after 1\d s .*giving up after 12 s$/m);
    assert.match(rs[1].stderr, /rank 1: no challenge from rank 0 at tcp:\/\/127\.0\.0\.1:\d+ within 12000 ms/);
    assert.equal(rs[1].code, 1);
  } finally {
    rs[0].proc.kill('SIGKILL');
  }
});

test('ranks that finish while a peer hangs (its event loop free) close without waiting for it', async () => {
  // TPRUN_COMM_TIMEOUT_MS is long: close() used to wait min(that, 30 s) for the hung peer's goodbye.
  const env = await jobEnv(3, { TPRUN_COMM_TIMEOUT_MS: '600000', APP_HANG_MS: '120000' });
  const rs = startRanks(3, env, ['finish-while-peer-hangs', '2']);
  try {
    // A hang guard below the old 30 s wait, far above what closing takes.
    await until(() => rs[0].code !== null && rs[1].code !== null, 25000, 'ranks 0 and 1 to exit');
    for (const r of [rs[0], rs[1]]) assert.equal(r.code, 0, r.stderr);
    assert.equal(rs[2].code, null, 'rank 2 still hangs');
  } finally {
    rs[2].proc.kill('SIGKILL');
  }
});

test('what a rank sent before closing reaches a peer whose event loop was blocked past the old 5 s close wait', { timeout: 120_000 }, async () => {
  // Over ZeroMQ (TPRUN_TRANSPORT=zmq): a closed connection's unread messages are dropped, so the sender's
  // close() must wait for the peer's acknowledgement as long as a receive would wait, not 5 s.
  const { runTprun } = await import('../helpers/procs.js');
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-late-'));
  try {
    const app = join(dir, 'late.mjs');
    writeFileSync(app, `import { initWorld } from ${JSON.stringify(new URL('../../dist/index.js', import.meta.url).href)};
const w = await initWorld();
if (w.rank === 0) { await w.send(Float32Array.of(1, 2, 3), 1); await w.close(); }
else {
  const t0 = Date.now(); while (Date.now() - t0 < 6500) {} // blocked: rank 0 is closing meanwhile
  console.log('got', Array.from(await w.recv(0, 0, new Float32Array(3))).join(','));
  await w.close();
}
`);
    const r = await runTprun(['-n', '2', '--gpus', 'none', '--', process.execPath, app], { env: { TPRUN_TRANSPORT: 'zmq' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'got 1,2,3');
    assert.deepEqual(r.left, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
