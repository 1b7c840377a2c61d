// A job whose ranks all run on one machine meets over Node's Unix sockets in a directory only its user can
// enter, not over ZeroMQ (src/rank/links.ts, unix-socket.ts): no TCP port, no zeromq addon in a rank, no
// socket name left once every rank is in. A local process without the job secret can neither join nor
// disturb the job through those sockets (issue #11's handshakes hold on this path too).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack, unpack } from 'msgpackr';
import { jobEnv, listeners, startRank, until } from './rank-spawn.js';
import { must } from '../helpers/must.js';

const uid = process.getuid?.() ?? 0;

/** A message on the stream: [u32 frame count], then per frame [u32 length][bytes] (little-endian). */
function framed(frames) {
  const parts = [Buffer.alloc(4)];
  parts[0].writeUInt32LE(frames.length);
  for (const f of frames) {
    const b = typeof f === 'string' ? Buffer.from(f) : Buffer.from(f);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    parts.push(len, b);
  }
  return Buffer.concat(parts);
}

/** A client of a Unix socket that collects what comes back. */
function connect(path) {
  const s = net.connect(path);
  const c = { s, got: Buffer.alloc(0), closed: false };
  s.on('data', (d) => (c.got = Buffer.concat([c.got, d])));
  s.on('error', () => undefined);
  s.on('close', () => (c.closed = true));
  return c;
}

/** The first message in `buf` (see framed), or undefined while it is incomplete. */
function firstMessage(buf) {
  if (buf.length < 4) return undefined;
  const n = buf.readUInt32LE(0);
  const out = [];
  let off = 4;
  for (let i = 0; i < n; i++) {
    if (buf.length < off + 4) return undefined;
    const len = buf.readUInt32LE(off);
    if (buf.length < off + 4 + len) return undefined;
    out.push(buf.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}

/** Unix sockets a process listens on, by path (/proc/net/unix: flag 00010000 is a listening socket). */
function unixListeners(pid) {
  const inodes = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  return readFileSync('/proc/net/unix', 'utf8').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/))
    .filter((c) => inodes.has(c[6]) && (parseInt(c[3], 16) & 0x10000) !== 0).map((c) => c[7] ?? '');
}

test('a single-host job opens no TCP port and loads no ZeroMQ; its sockets live in a private directory and their names are gone once every rank is in', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tprun-uds-'));
  const dir = join(tmp, `tprun-${uid}`);
  const go = join(tmp, 'go');
  const env = await jobEnv(2, { APP_GO_FILE: go, TMPDIR: tmp });
  const rs = [startRank(0, env, ['hold']), startRank(1, env, ['hold'])];
  try {
    await until(() => rs.every((r) => r.lines().some((l) => l.ready)) || rs.some((r) => r.code !== null), 30000, 'both ranks to be ready');
    for (const r of rs) {
      assert.deepEqual(listeners(r.pid), [], `rank ${r.rank} listens on TCP:\n${r.stderr}`);
      const maps = readFileSync(`/proc/${r.pid}/maps`, 'utf8');
      assert.doesNotMatch(maps, /zeromq/, `rank ${r.rank} loaded the zeromq addon`);
      const uds = unixListeners(r.pid).filter((p) => p && !p.startsWith('@'));
      assert.ok(uds.length >= 1, `rank ${r.rank} listens on a Unix socket`);
      for (const p of uds) assert.ok(p.startsWith(`${dir}/`), `rank ${r.rank} listens on ${p}, outside ${dir}`);
    }
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    // Every peer is in: nobody else can connect, and nothing is left to clean up.
    assert.deepEqual(readdirSync(dir), []);
    writeFileSync(go, '');
    await Promise.all(rs.map((r) => r.exited));
    for (const r of rs) assert.equal(r.code, 0, r.stderr);
    assert.equal(rs.map((r) => r.stderr).join(''), '');
  } finally {
    for (const r of rs) r.proc.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a local process without the job secret can neither join nor disturb a single-host job through its Unix sockets', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tprun-uds-'));
  const dir = join(tmp, `tprun-${uid}`);
  const env = await jobEnv(2, { TMPDIR: tmp });
  const rdvName = `tprun-${createHash('sha256').update(`${env.TPRUN_JOB_ID}\0tcp://127.0.0.1:${env.TPRUN_MASTER_PORT}`).digest('hex').slice(0, 12)}.sock`;
  const rdv = join(dir, rdvName);
  const r0 = startRank(0, env, ['hello']);
  const strangers = [];
  const knock = (path, bytes) => { const c = connect(path); strangers.push(c); c.s.write(bytes); return c; };
  try {
    await until(() => existsSync(rdv) || r0.code !== null, 30000, 'rank 0 to listen for the rendezvous');
    const data = join(dir, must(readdirSync(dir).find((f) => f.endsWith('.sock') && f !== rdvName), 'rank 0\'s data socket'));
    // The rendezvous: bytes that are no message, a malformed hello, a message over the limit, and a
    // stranger that takes a challenge and answers it without the secret.
    knock(rdv, randomBytes(4096));
    knock(rdv, framed(['HELLO', pack(null)]));
    knock(rdv, framed(['HELLO', Buffer.alloc(2 << 20)]));
    const s = knock(rdv, framed(['HELLO', pack({ cn: randomBytes(32) })]));
    await until(() => firstMessage(s.got) || r0.code !== null, 30000, 'a challenge');
    assert.equal(must(firstMessage(s.got), 'a challenge')[0].toString(), 'CHAL', r0.stderr);
    s.got = Buffer.alloc(0);
    s.s.write(framed(['AUTH', pack({ size: 2, info: { rank: 1, host: 'x', hostKey: 'x', pid: 1, data: `ipc://${data}`, dataNonce: randomBytes(32) }, cp: randomBytes(32) })]));
    await until(() => firstMessage(s.got) || r0.code !== null, 30000, 'a verdict');
    const [verdict, why] = must(firstMessage(s.got), 'a verdict');
    assert.equal(verdict.toString(), 'DENY');
    assert.match(unpack(why).reason, /wrong job secret \(claims rank 1\)/);
    // Rank 0's data socket, before its peer is in: junk, and a link that claims rank 1 with a made-up proof.
    knock(data, framed(['not a header']));
    const hdr = Buffer.alloc(32);
    hdr.writeUInt32LE(0xc0000000, 0);
    hdr.writeUInt32LE(1, 4);
    hdr.writeDoubleLE(1, 8); // "total": the rank it claims to be
    knock(data, framed([hdr, randomBytes(32)]));
    // The rendezvous's refusals come at once; the data socket's once the world is formed (its messages are
    // read from then on).
    const refusals = () => (r0.stderr.match(/refused a connection/g) ?? []).length;
    await until(() => refusals() >= 4 || r0.code !== null, 30000, 'rank 0 to refuse the strangers at the rendezvous');
    for (const c of strangers.splice(0, 4)) c.s.destroy(); // strangers that leave do not look like a dead rank
    assert.equal(r0.code, null, `rank 0 survived the strangers:\n${r0.stderr}`);
    // The real rank 1 still joins, and the job completes.
    const r1 = startRank(1, env, ['hello']);
    await Promise.all([r0.exited, r1.exited]);
    assert.equal(r0.code, 0, r0.stderr);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(r0.lines().find((l) => 'sum' in l).sum, 3);
    assert.deepEqual(readdirSync(dir), [], 'no socket name is left');
    const where = `a process on this machine \\(Unix socket ${dir}/[^)]+\\.sock\\)`;
    assert.match(r0.stderr, new RegExp(`^tprun: rank 0 refused a connection from ${where}: malformed message`, 'm'));
    assert.match(r0.stderr, new RegExp(`^tprun: rank 0 refused a connection from ${where}: malformed hello`, 'm'));
    assert.match(r0.stderr, new RegExp(`^tprun: rank 0 refused a connection from ${where}: message over 1048576 bytes$`, 'm'));
    assert.match(r0.stderr, new RegExp(`^tprun: rank 0 refused a connection from ${where}: wrong job secret \\(claims rank 1\\)$`, 'm'));
    assert.match(r0.stderr, new RegExp(`^tprun: rank 0 refused a data connection from ${where}: malformed frame$`, 'm'));
    assert.match(r0.stderr, new RegExp(`^tprun: rank 0 refused a data connection from ${where}: bad data-plane proof \\(claims rank 1\\)$`, 'm'));
  } finally {
    for (const c of strangers) c.s.destroy();
    r0.proc.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a rank killed outright before its world started leaves a socket name that the next world on this machine removes', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tprun-uds-'));
  const dir = join(tmp, `tprun-${uid}`);
  try {
    // Rank 0 of a world whose rank 1 never comes: it listens, then waits at the rendezvous, and is killed.
    const env = await jobEnv(2, { TMPDIR: tmp });
    const victim = startRank(0, env, ['hello']);
    const mine = () => (existsSync(dir) ? readdirSync(dir).filter((f) => f.includes(`-${victim.pid}-`)) : []);
    await until(() => mine().length > 0 || victim.code !== null, 30000, 'rank 0 to listen for data');
    victim.proc.kill('SIGKILL');
    await victim.exited;
    const left = mine();
    assert.equal(left.length, 1, 'SIGKILL leaves the data socket\'s name behind');
    // Not a socket, though named like one of a dead process: not tprun's, left alone.
    const decoy = `tprun-${'0'.repeat(12)}-0-${victim.pid}-${'0'.repeat(8)}.sock`;
    writeFileSync(join(dir, decoy), 'not a socket');
    const env2 = await jobEnv(2, { TMPDIR: tmp });
    const rs = [startRank(0, env2, ['hello']), startRank(1, env2, ['hello'])];
    await Promise.all(rs.map((r) => r.exited));
    for (const r of rs) assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(dir).filter((f) => left.includes(f)), [], 'the stale name was swept');
    assert.ok(existsSync(join(dir, decoy)), 'a file that is not a socket stays');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
