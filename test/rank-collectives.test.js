// Every collective at world sizes 1..5, real rank processes started by `tprun -n N`; each rank checks
// its results against a sequential reference computed from all ranks' inputs (test/helpers/world-app.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));

for (const n of [1, 2, 3, 4, 5]) {
  test(`all collectives agree with the sequential reference on ${n} rank(s)`, async () => {
    const { stdout } = await run(process.execPath, [CLI, '-n', String(n), '--gpus', 'none', '--timeout', '50', '--', process.execPath, APP, 'all'], { timeout: 55000 });
    const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.rank).sort(), [...Array(n).keys()]);
    for (const l of lines) assert.deepEqual([l.ok, l.size, l.source], [true, n, 'tprun']);
  });
}

test('the network data plane (TPRUN_TRANSPORT=zmq) gives the same results', async () => {
  const { stdout } = await run(process.execPath, [CLI, '-n', '3', '--gpus', 'none', '--timeout', '50', '--', process.execPath, APP, 'all'],
    { timeout: 55000, env: { ...process.env, TPRUN_TRANSPORT: 'zmq' } });
  assert.equal(stdout.split('\n').filter((l) => l.includes('"ok":true')).length, 3);
});

test('with CurveZMQ keys in the environment the world forms over encrypted sockets', async () => {
  const zmq = await import('zeromq');
  const k = zmq.curveKeyPair();
  const { spawnRanks } = await import('./helpers/spawn-ranks.js');
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { TPRUN_CURVE_SERVER_PUBLIC: k.publicKey, TPRUN_CURVE_SERVER_SECRET: k.secretKey, TPRUN_TRANSPORT: 'zmq' }, timeoutMs: 40000,
  });
  for (const r of res) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).sum, 6);
  }
  // A rank holding the wrong server key cannot even complete the handshake: the job times out.
  const bad = zmq.curveKeyPair();
  const res2 = await spawnRanks(2, [APP, 'hello'], {
    env: { TPRUN_CURVE_SERVER_PUBLIC: k.publicKey, TPRUN_CURVE_SERVER_SECRET: k.secretKey, APP_TIMEOUT_MS: '2000' },
    perRankEnv: (r) => (r === 1 ? { TPRUN_CURVE_SERVER_PUBLIC: bad.publicKey } : {}), timeoutMs: 40000,
  });
  for (const r of res2) assert.equal(r.code, 1);
  assert.match(res2[0].stderr, /rendezvous timed out .* ranks? 1 did not arrive/);
});
