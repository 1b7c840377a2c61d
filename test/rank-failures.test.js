// Failures end collectives with errors that name the rank at fault, never a hang: a peer killed in the
// middle of allReduces, a rank that never arrives (timeout), an impostor without the job secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { spawnRanks } from './helpers/spawn-ranks.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('a rank killed during allReduces fails the others promptly, naming it (no launcher)', async () => {
  const t0 = Date.now();
  const res = await spawnRanks(3, [APP, 'die', '1'], { timeoutMs: 30000 });
  assert.equal(res[1].signal, 'SIGKILL');
  for (const r of [res[0], res[2]]) {
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /allReduce #\d+ .*failed on rank \d: rank 1 disconnected/);
  }
  assert.ok(Date.now() - t0 < 25000, 'the survivors were ended by the world, not the test timeout');
  for (const r of res) assert.ok(!alive(r.pid));
});

test('under tprun, a rank killed during allReduces ends the job with its signal', async () => {
  const err = await run(process.execPath, [CLI, '-n', '3', '--gpus', 'none', '--timeout', '40', '--', process.execPath, APP, 'die', '2'], { timeout: 45000 })
    .then(() => assert.fail('the job should fail'), (e) => e);
  assert.equal(err.code, 137);
  assert.match(err.stderr, /rank 2 .*SIGKILL/);
});

// A rank whose initWorld fails after its links are up (here a bad TPRUN_SHM_SPIN_NS, read where the
// shared-memory allReduce starts) and that catches the error: it closes its links as a failing rank does,
// so its process can end and its peers learn at once, naming it. Before, the failed world kept its sockets:
// that rank never exited and its peers waited the world's timeout (120 s here, past the test's guard).
// TPRUN_IMPLICIT_CLOSE is read by the world itself after its links are up (review: it was read after the
// try, so its refusal left them open).
for (const [name, value, why] of [['TPRUN_SHM_SPIN_NS', 'abc', 'not a whole number >= 0'], ['TPRUN_IMPLICIT_CLOSE', 'abc', 'not 0 (off) or 1 (on)']]) test(`a rank whose initWorld fails (${name}=${value}) and is caught lets its process end, and its peers fail at once naming it`, { timeout: 90_000 }, async () => {
  const INIT_FAIL = fileURLToPath(new URL('./helpers/init-fail-app.js', import.meta.url));
  const res = await spawnRanks(2, [INIT_FAIL], {
    env: { TPRUN_COMM_TIMEOUT_MS: '120000' }, perRankEnv: (r) => (r === 1 ? { [name]: value } : {}), timeoutMs: 60000,
  });
  assert.equal(res[1].signal, null, `rank 1 was killed by the test's guard: ${res[1].stdout} ${res[1].stderr}`);
  assert.equal(res[1].code, 0, res[1].stderr);
  assert.deepEqual(JSON.parse(res[1].stdout), { initWorld: `${name}=${value}: ${why}` });
  assert.equal(res[0].signal, null, `rank 0 was killed by the test's guard: ${res[0].stdout} ${res[0].stderr}`);
  // Rank 0 learns in its barrier, or already in initWorld where the allReduce areas are set up when the world
  // starts (their first exchange is a collective): either way at once, naming rank 1.
  const out0 = JSON.parse(res[0].stdout);
  assert.equal(res[0].code, out0.barrier ? 1 : 0, res[0].stderr);
  assert.match(out0.barrier ?? out0.initWorld, /rank 1 (closed its world|disconnected)/);
  for (const r of res) assert.ok(!alive(r.pid));
});

// A receive that timed out before any of its message came hands its sequence number back: before, a retry
// waited for the sender's next message, and the late one was kept unclaimed (here: got [22], then nothing).
for (const transport of ['shm', 'zmq']) {
  test(`a recv retried after its timeout gets the late message, then the next, in order (${transport})`, async () => {
    const res = await spawnRanks(2, [APP, 'recv-retry'], { env: transport === 'zmq' ? { TPRUN_TRANSPORT: 'zmq' } : {}, timeoutMs: 30000 });
    for (const r of res) assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(res[1].stdout), { got: [11, 22] });
  });
}

test('a rank that never arrives makes the barrier time out, naming it', async () => {
  const res = await spawnRanks(3, [APP, 'absent', '2'], { timeoutMs: 30000 });
  for (const r of [res[0], res[1]]) {
    assert.equal(r.code, 1);
    assert.match(r.stderr, /barrier #1 timed out after 1500 ms on rank [01]: no data from rank 2/);
  }
});

test('a peer with the wrong secret is refused and logged with its address; the real rank joins', async () => {
  // The impostor starts first; the real rank 1 only once the impostor has been turned away.
  const res = await spawnRanks(2, [APP, 'hello'], {
    extra: [{ rank: 1, env: { TPRUN_SECRET: 'ab'.repeat(32), APP_TIMEOUT_MS: '15000' } }],
    gate: (i, procs) => (i === 1 ? procs[2].exited : undefined),
    timeoutMs: 40000,
  });
  const [r0, impostor, r1] = [res[0], res[2], res[1]];
  assert.equal(r0.code, 0, r0.stderr);
  assert.equal(r1.code, 0, r1.stderr);
  assert.match(r0.stderr, /rank 0 refused a connection from 127\.0\.0\.1: wrong job secret \(claims rank 1\)/);
  assert.doesNotMatch(r0.stderr, new RegExp('ab'.repeat(32)));
  assert.equal(JSON.parse(r0.stdout).sum, 3);
  assert.notEqual(impostor.code, 0);
  assert.match(impostor.stderr, /did not prove the job secret/);
});

for (const transport of ['shm', 'zmq']) {
  test(`a message above the receiver's size limit is refused (${transport})`, async () => {
    const res = await spawnRanks(2, [APP, 'oversize'], {
      // Shared memory is the default on one machine (TPRUN_TRANSPORT=shm says so; zmq puts every byte on ZeroMQ).
      env: { ...(transport === 'zmq' ? { TPRUN_TRANSPORT: 'zmq' } : {}), APP_TIMEOUT_MS: '5000' }, perRankEnv: (r) => (r === 1 ? { TPRUN_MAX_MESSAGE_BYTES: '1000' } : {}), timeoutMs: 30000,
    });
    assert.equal(res[1].code, 1);
    assert.match(res[1].stderr, /recv from rank 0 \(tag 4\) failed on rank 1: rank 0 sent a 4000-byte message; the limit is 1000/);
  });
}

test('a rank killed before its peers opened its ring file leaves nothing once the next world starts', async () => {
  const { readdirSync } = await import('node:fs');
  const mine = (pid) => readdirSync('/dev/shm').filter((f) => f.startsWith('tprun-') && f.includes(`-${pid}-`));
  // Rank 0 of a world of 2 whose rank 1 never comes: it creates its file, then waits at rendezvous.
  let victim;
  const res = spawnRanks(1, [APP, 'hello'], { env: { TPRUN_WORLD_SIZE: '2' }, timeoutMs: 30000 });
  await new Promise((r) => setTimeout(r, 100));
  const { readFileSync } = await import('node:fs');
  const cmdline = (pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; } };
  for (let i = 0; i < 100 && !victim; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => cmdline(p).includes(`${APP}\0hello`));
    victim = pids.find((p) => mine(p).length);
  }
  assert.ok(victim, 'rank 0 created its ring file');
  process.kill(victim, 'SIGKILL');
  await res;
  assert.equal(mine(victim).length, 1, 'SIGKILL leaves the file');
  const next = await spawnRanks(2, [APP, 'hello'], { timeoutMs: 30000 });
  for (const r of next) assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(mine(victim), [], 'the next world swept it');
});
