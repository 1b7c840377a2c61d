// A rank that joined the rendezvous and died before the world formed: rank 0 names it, at once. It used
// to wait the whole timeout and then say "rank  did not arrive" (an empty list: every rank had joined,
// the one it waited for was dead). Real ranks, no launcher (the launcher would end the job itself).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { spawnRanks } from './helpers/spawn-ranks.js';
import { spawnSync } from 'node:child_process';

const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
const until = async (f) => { while (!f()) await new Promise((r) => setTimeout(r, 50)); };

test('a rank killed after joining the rendezvous fails rank 0 at once, naming it', { timeout: 120_000 }, async () => {
  // Rank 0's warning that only rank 2 is still missing is the sign that rank 1 has joined; rank 1 is then
  // killed, and rank 2 started only after that. The world's own limit (120 s) is past the test's guard
  // (60 s): a rank 0 that waited for it is killed by the guard and the test fails.
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '120000' },
    perRankEnv: (r) => (r === 2 ? { APP_TIMEOUT_MS: '5000' } : {}),
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      procs[1].proc.kill('SIGKILL');
      await procs[1].exited;
    },
    timeoutMs: 60_000,
  });
  assert.equal(res[1].signal, 'SIGKILL');
  assert.equal(res[0].signal, null, `rank 0 was killed by the test's guard: ${res[0].stderr}`);
  assert.equal(res[0].code, 1, res[0].stderr);
  assert.match(res[0].stderr, new RegExp(`CommError: rendezvous failed at rank 0: rank 1 \\(.*, pid ${res[1].pid}\\) disconnected after joining, before the world formed`));
  assert.doesNotMatch(res[0].stderr, /timed out|rank  /);
  for (const r of res) assert.ok(!alive(r.pid));
});

test('rank 0 killed after others joined the rendezvous fails them at once, naming it', { timeout: 120_000 }, async () => {
  // As above, but rank 0 dies: rank 1, which has its challenge and waits for the world table, sees its
  // connection drop. It used to wait its whole limit (120 s here, past the guard) for "no world table".
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '120000' },
    perRankEnv: (r) => (r === 2 ? { APP_TIMEOUT_MS: '3000' } : {}),
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      procs[0].proc.kill('SIGKILL');
      await procs[0].exited;
    },
    timeoutMs: 60_000,
  });
  assert.equal(res[0].signal, 'SIGKILL');
  assert.equal(res[1].signal, null, `rank 1 was killed by the test's guard: ${res[1].stderr}`);
  assert.equal(res[1].code, 1, res[1].stderr);
  assert.match(res[1].stderr, /CommError: rank 1: rank 0 at \S+ disconnected during the rendezvous \(it exited or crashed\)/);
  for (const r of res) assert.ok(!alive(r.pid));
});

/** The local ports of `pid`'s established TCP connections (iproute2's ss), or undefined without ss. */
const tcpPorts = (pid) => {
  const r = spawnSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return r.stdout.split('\n').filter((l) => l.includes(`pid=${pid},`)).map((l) => l.trim().split(/\s+/)[2].replace(/.*:/, ''));
};

test('a brief TCP reset of a joined rank\'s rendezvous connection is survived: it reconnects', { timeout: 120_000 }, async (t) => {
  // `ss -K` (root, a kernel with sock_destroy) resets rank 1's connection to rank 0 after it joined. Rank 0
  // used to fail the job at once blaming rank 1 ("it exited or crashed") while rank 1 lived and reconnected.
  if (process.getuid?.() !== 0 || tcpPorts(process.pid) === undefined) return t.skip('needs root and iproute2\'s ss');
  let skipped;
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '60000' },
    perRankEnv: (r) => (r === 2 ? { APP_TIMEOUT_MS: '30000' } : {}),
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      const ports = tcpPorts(procs[1].pid) ?? [];
      for (const p of ports) spawnSync('ss', ['-K', 'src', '127.0.0.1', 'sport', '=', `:${p}`], { stdio: 'ignore' });
      if (ports.length === 0 || (tcpPorts(procs[1].pid) ?? []).some((p) => ports.includes(p))) skipped = '`ss -K` did not close the connection (no sock_destroy)';
      // Rank 2 joins once rank 0 has seen the drop and rank 1 is back, or has given up on it.
      await until(() => /came back|rendezvous failed/.test(procs[0].stderr) || procs[0].proc.exitCode !== null);
    },
    timeoutMs: 60_000,
  });
  if (skipped) return t.skip(skipped);
  for (const r of res) {
    assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.match(r.stdout, /"sum":6/);
  }
  assert.match(res[0].stderr, /rank 1's rendezvous connection dropped and came back/);
});

test('a joined rank of this host that lives but never reconnects is named when the rendezvous times out', { timeout: 120_000 }, async (t) => {
  // Rank 1 is stopped (SIGSTOP: alive, its pid answers) and its connection reset: rank 0 waits for it, and
  // its timeout names it rather than "rank  did not arrive" (every rank had joined).
  if (process.getuid?.() !== 0 || tcpPorts(process.pid) === undefined) return t.skip('needs root and iproute2\'s ss');
  let skipped;
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '60000' },
    perRankEnv: (r) => (r === 0 ? { APP_TIMEOUT_MS: '20000' } : r === 2 ? { APP_TIMEOUT_MS: '2000' } : {}),
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      procs[1].proc.kill('SIGSTOP');
      const ports = tcpPorts(procs[1].pid) ?? [];
      for (const p of ports) spawnSync('ss', ['-K', 'src', '127.0.0.1', 'sport', '=', `:${p}`], { stdio: 'ignore' });
      if (ports.length === 0 || (tcpPorts(procs[1].pid) ?? []).some((p) => ports.includes(p))) skipped = '`ss -K` did not close the connection (no sock_destroy)';
      await procs[0].exited;
      procs[1].proc.kill('SIGKILL');
    },
    timeoutMs: 60_000,
  });
  if (skipped) return t.skip(skipped);
  assert.equal(res[0].code, 1, res[0].stderr);
  assert.match(res[0].stderr, /rendezvous timed out after 20000 ms at rank 0: rank 1 lost its connection after joining and did not reconnect/);
});

/** `pid`'s established TCP connections (iproute2's ss): local port and bytes waiting to be read. */
const tcpConns = (pid) => spawnSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' }).stdout.split('\n')
  .filter((l) => l.includes(`pid=${pid},`)).map((l) => l.trim().split(/\s+/)).map((c) => ({ recvQ: Number(c[0]), port: c[2].replace(/.*:/, '') }));
/** Resets `pid`'s TCP connections; the reason to skip where that cannot be done. */
const resetAll = (pid) => {
  const ports = tcpConns(pid).map((c) => c.port);
  for (const p of ports) spawnSync('ss', ['-K', 'src', '127.0.0.1', 'sport', '=', `:${p}`], { stdio: 'ignore' });
  if (ports.length === 0 || tcpConns(pid).some((c) => ports.includes(c.port))) return '`ss -K` did not close the connection (no sock_destroy)';
  return undefined;
};

test('a reset while rank 0 is not reading: the rank\'s reconnection and its next message are taken', { timeout: 120_000 }, async (t) => {
  // Rank 1 joined and is stopped; rank 2 joins, so rank 0 sends the world table to both and waits for
  // their exchange. Rank 0 then blocks its event loop (a long synchronous step), rank 1's connection is
  // reset and rank 1 resumes: ZeroMQ reconnects it on its own threads and rank 1 sends its exchange. Rank
  // 0's socket turned the new connection away while it had not read the old one's drop (a duplicate
  // routing id), and the exchange was lost: the job timed out naming a live rank 1.
  if (process.getuid?.() !== 0 || tcpPorts(process.pid) === undefined) return t.skip('needs root and iproute2\'s ss');
  let skipped;
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '20000', APP_BLOCK_MS: '3000' },
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      procs[1].proc.kill('SIGSTOP');
      // Once rank 2 runs and rank 1's world table waits unread in its kernel.
      void until(() => procs[2] && tcpConns(procs[1].pid).some((c) => c.recvQ > 0)).then(async () => {
        procs[0].proc.kill('SIGUSR2');
        await until(() => /app: blocked/.test(procs[0].stderr));
        skipped = resetAll(procs[1].pid);
        procs[1].proc.kill('SIGCONT');
      });
    },
    timeoutMs: 60_000,
  });
  if (skipped) return t.skip(skipped);
  assert.match(res[0].stderr, /app: unblocked/);
  for (const r of res) {
    assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.match(r.stdout, /"sum":6/);
  }
});

test('a reset of a joining rank while rank 0 was blocked: the handshake completes', { timeout: 120_000 }, async (t) => {
  // Rank 0 blocks its event loop before rank 1 arrives; rank 1 connects and says hello, and its
  // connection is reset meanwhile. What rank 0 then read of the two connections, and in which order,
  // varies: it used to drop rank 1's challenge at the old connection's drop notice and refuse its proof
  // ('authentication without a challenge'), or answer over the dead connection, and the job failed (2
  // of 7 runs before the mend; the reviewer's `ss -K` runs saw the same). Now a rank starts a fresh
  // challenge round after reconnecting (a new nonce, then its exchange again under the new round's MAC), and
  // rank 0 keeps its pending challenges across the drop and answers each round once.
  if (process.getuid?.() !== 0 || tcpPorts(process.pid) === undefined) return t.skip('needs root and iproute2\'s ss');
  let skipped;
  const listening = (pid) => spawnSync('ss', ['-tlnpH'], { encoding: 'utf8' }).stdout.includes(`pid=${pid},`);
  const res = await spawnRanks(2, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '20000', APP_BLOCK_MS: '3000' },
    gate: async (i, procs) => {
      if (i !== 1) return;
      await until(() => listening(procs[0].pid));
      await new Promise((r) => setTimeout(r, 300));
      procs[0].proc.kill('SIGUSR2');
      await until(() => /app: blocked/.test(procs[0].stderr));
      void until(() => procs[1] && tcpConns(procs[1].pid).length > 0).then(async () => {
        await new Promise((r) => setTimeout(r, 300)); // its hello is on its way
        skipped = resetAll(procs[1].pid);
      });
    },
    timeoutMs: 60_000,
  });
  if (skipped) return t.skip(skipped);
  assert.match(res[0].stderr, /app: unblocked/);
  for (const r of res) {
    assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.match(r.stdout, /"sum":3/);
  }
});

test('an exchange answer lost with a reset connection is asked for again after rank 0 has moved on', { timeout: 120_000 }, async (t) => {
  // Rank 1 sends its exchange while rank 0's loop is blocked, and its connection is reset before rank 0
  // answers: rank 0 then reads that exchange (still queued from the old connection) before the drop, answers
  // every rank over what it believes live connections, and goes on to form its world. Rank 1's answer went
  // to the dead connection; it asked again after reconnecting, but rank 0 had closed its rendezvous socket
  // ('rank 0 ... disconnected during the rendezvous').
  if (process.getuid?.() !== 0 || tcpPorts(process.pid) === undefined) return t.skip('needs root and iproute2\'s ss');
  let skipped;
  const res = await spawnRanks(3, [APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '20000', APP_BLOCK_MS: '3000' },
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      procs[1].proc.kill('SIGSTOP');
      void until(() => procs[2] && tcpConns(procs[1].pid).some((c) => c.recvQ > 0)).then(async () => {
        procs[0].proc.kill('SIGUSR2');
        await until(() => /app: blocked/.test(procs[0].stderr));
        procs[1].proc.kill('SIGCONT');
        // Rank 1 has read its world table and sent its exchange.
        await until(() => tcpConns(procs[1].pid).every((c) => c.recvQ === 0));
        await new Promise((r) => setTimeout(r, 300));
        skipped = resetAll(procs[1].pid);
      });
    },
    timeoutMs: 60_000,
  });
  if (skipped) return t.skip(skipped);
  assert.match(res[0].stderr, /app: unblocked/);
  for (const r of res) {
    assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.match(r.stdout, /"sum":6/);
  }
});
