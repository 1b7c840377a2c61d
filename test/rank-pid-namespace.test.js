// Rank 0 judges a joined rank whose rendezvous connection dropped by its pid only where that pid means
// something here: the same host key AND the same PID namespace. Ranks in containers that share a host's
// network namespace and name (one host key) but each have their own PID namespace were judged by a pid
// of another namespace: a live rank taken for dead after a mere connection drop (or a dead one for
// alive, where its pid names another process here). Such a rank now gets the other-host rule (a window to
// reconnect).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rendezvous, pidWatchable } from '../dist/rank/rendezvous.js';
import { pidNamespace } from '../dist/util/proc.js';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { freePort, spawnRanks } from './helpers/spawn-ranks.js';

test('pid liveness needs the same host key and the same PID namespace', () => {
  const me = { hostKey: 'h/boot', pidNs: '4026531836' };
  assert.equal(pidWatchable({ ...me }, me), true);
  assert.equal(pidWatchable({ ...me, pidNs: '4026532999' }, me), false);
  assert.equal(pidWatchable({ ...me, hostKey: 'other/boot' }, me), false);
  assert.equal(pidWatchable({ ...me, pidNs: undefined }, me), false, 'a rank that sent none (an older tprun) is not assumed to share it');
  assert.equal(pidWatchable({ hostKey: 'h/boot' }, { hostKey: 'h/boot' }), true, 'off Linux: the host key decides');
});

/** A pid nobody has here. */
function freePid() {
  for (let p = 4_000_000; p > 1000; p--) {
    try { process.kill(p, 0); } catch (e) { if (e.code === 'ESRCH') return p; }
  }
  throw new Error('no free pid');
}

/** Rank 0 and rank 1 in this process; rank 1 claims `pid` and `pidNs`, joins, then drops its connection. */
async function dropAfterJoin(pidNs) {
  const port = await freePort();
  const secret = randomBytes(32);
  const ns = pidNamespace();
  const info = (rank, extra) => ({ rank, host: 'h', hostKey: 'h/boot', pid: process.pid, pidNs: ns, data: `tcp://127.0.0.1:${port + 1}`, dataNonce: randomBytes(32), ...extra });
  const common = { size: 2, bind: `tcp://127.0.0.1:${port}`, connect: `tcp://127.0.0.1:${port}`, secret, timeoutMs: 20_000, log: () => {} };
  const [r0, r1] = await Promise.all([
    rendezvous({ ...common, rank: 0, info: info(0) }),
    rendezvous({ ...common, rank: 1, info: info(1, { pid: freePid(), pidNs }) }),
  ]);
  r1.release();
  const err = await r0.exchange(true, /** @type {any} */ ((await import('zod/v3')).z.boolean())).then(() => undefined, (e) => e);
  r0.release();
  return { err };
}

test('a joined rank of another PID namespace whose connection drops gets a window to reconnect, not a pid check', { timeout: 60_000, skip: process.platform !== 'linux' && 'needs /proc/self/ns/pid' }, async () => {
  // Its pid is one nobody has here: judged by it, rank 0 called it dead at once.
  const other = await dropAfterJoin('1');
  assert.match(String(other.err?.message), /rank 1 \(h, pid \d+\) disconnected after joining, before the world formed \(it exited, crashed, or its connection was lost\)/);
  // The same namespace: the pid is watched, and names nobody: dead at once.
  const same = await dropAfterJoin(pidNamespace());
  assert.match(String(same.err?.message), /disconnected after joining, before the world formed \(it exited or crashed\)/);
});

const WRAP = fileURLToPath(new URL('./helpers/pidns-app.js', import.meta.url));
const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));
const until = async (f) => { while (!f()) await new Promise((r) => setTimeout(r, 50)); };
/** `pid` and every process below it. */
const tree = (pid) => {
  let kids = [];
  try { kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { /* gone */ }
  return [pid, ...kids.flatMap(tree)];
};
/** Local ports of the established TCP connections of these pids (iproute2's ss). */
const ports = (pids) => spawnSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' }).stdout.split('\n')
  .filter((l) => pids.some((p) => l.includes(`pid=${p},`))).map((l) => l.trim().split(/\s+/)[2].replace(/.*:/, ''));

test('real ranks: a rank in its own PID namespace survives a reset of its rendezvous connection', { timeout: 120_000 }, async (t) => {
  // Rank 1 runs under `unshare --pid --fork --mount-proc` (same host name, boot id and network), where its
  // pid is one this host's namespace has nobody at; `ss -K` resets its connection after it joined. Rank 0
  // took that pid for a dead rank and failed the job at once ('it exited or crashed').
  if (process.getuid?.() !== 0) return t.skip('needs root (unshare --pid, ss -K)');
  const probe = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']);
  if (probe.status !== 0) return t.skip(`unshare --pid does not work here: ${String(probe.stderr).trim()}`);
  let skipped;
  const res = await spawnRanks(3, [WRAP, APP, 'hello'], {
    env: { APP_TIMEOUT_MS: '30000' },
    perRankEnv: (r) => (r === 1 ? { APP_PID_NS: '1' } : {}),
    gate: async (i, procs) => {
      if (i !== 2) return;
      await until(() => /still waiting for rank 2 to join/.test(procs[0].stderr));
      const pids = tree(procs[1].pid);
      const ps = ports(pids);
      for (const p of ps) spawnSync('ss', ['-K', 'src', '127.0.0.1', 'sport', '=', `:${p}`], { stdio: 'ignore' });
      if (ps.length === 0 || ports(pids).some((p) => ps.includes(p))) skipped = '`ss -K` did not close the connection (no sock_destroy)';
      await until(() => /came back|rendezvous failed/.test(procs[0].stderr) || procs[0].proc.exitCode !== null);
    },
    timeoutMs: 60_000,
  });
  if (skipped) return t.skip(skipped);
  assert.match(res[1].stderr, /pid namespace pid:\[\d+\], pid \d+/);
  for (const r of res) {
    assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.match(r.stdout, /"sum":6/);
  }
  assert.match(res[0].stderr, /rank 1's rendezvous connection dropped and came back/);
});
