// Issue #11 item 1: one unauthenticated message must not kill a starting job, and a single-host job must
// not listen beyond the loopback interface.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { pack } from 'msgpackr';
import { jobEnv, startRank, until } from './rank-spawn.js';

/** A client that speaks ZeroMQ to the rendezvous as a rank would (PLAIN, like real ranks) but sends junk. */
function intruder(port) {
  const user = randomBytes(12).toString('hex');
  const d = new zmq.Dealer({ linger: 0, plainUsername: user, plainPassword: 'x', routingId: user });
  d.connect(`tcp://127.0.0.1:${port}`);
  return d;
}

/** Sends every kind of junk to the rendezvous at `port`; resolves once rank 0 refused it all (or died). */
async function knock(port, r0) {
  const junk = [
    ['HELLO', pack(null)],
    ['HELLO', pack({ cn: 5 })],
    ['AUTH', pack(null)],
    ['HELLO', pack({ cn: 'x'.repeat(32) })], // a string where 32 bytes belong
    ['HELLO', pack([1, 2, 3])],
    ['AUTH', pack({ size: 2, info: { rank: 1 }, cp: Buffer.alloc(32) })], // no challenge first
    ['HELLO', Buffer.from([0xc1, 0xff, 0x00])], // not msgpack
    ['NONSENSE'],
  ];
  const d = intruder(port);
  const big = intruder(port);
  try {
    for (const m of junk) await d.send(m);
    // A challenge answered with the wrong types everywhere.
    await d.send(['HELLO', pack({ cn: randomBytes(32) })]);
    let reply;
    do reply = await Promise.race([d.receive().then(([t]) => t.toString()), r0.exited.then(() => 'rank 0 exited')]);
    while (reply === 'DENY');
    assert.equal(reply, 'CHAL', r0.stderr);
    await d.send(['AUTH', pack({ size: '2', info: 'rank one', cp: 7 })]);
    // A frame over the rendezvous limit, and a raw TCP client that does not speak ZeroMQ at all.
    await big.send(['HELLO', Buffer.alloc(2 << 20)]);
    await new Promise((res) => {
      const s = net.connect(port, '127.0.0.1', () => s.end(randomBytes(4096), () => res(undefined)));
      s.on('error', res);
    });
    const refusals = () => (r0.stderr.match(/refused a connection/g) ?? []).length;
    await until(() => refusals() >= junk.length + 1 || r0.code !== null, 30000, 'rank 0 to refuse the junk');
  } finally {
    d.close();
    big.close();
  }
}

test('garbage on rank 0\'s rendezvous port is refused and logged with its address; the job completes', async () => {
  const env = await jobEnv(2);
  const r0 = startRank(0, env, ['hello']);
  try {
    await knock(Number(env.TPRUN_MASTER_PORT), r0);
    assert.equal(r0.code, null, `rank 0 survived the junk:\n${r0.stderr}`);
    const r1 = startRank(1, env, ['hello']);
    await Promise.all([r0.exited, r1.exited]);
    assert.equal(r0.code, 0, r0.stderr);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(r0.lines().find((l) => 'sum' in l).sum, 3);
    for (const line of r0.stderr.split('\n').filter((l) => l.includes('refused'))) {
      assert.match(line, /^tprun: rank 0 refused a connection from 127\.0\.0\.1: \S/, line);
    }
    assert.match(r0.stderr, /malformed hello/);
    assert.match(r0.stderr, /malformed authentication/);
    assert.doesNotMatch(r0.stderr, /TypeError|Cannot read/);
  } finally {
    r0.proc.kill('SIGKILL');
  }
});

/** Listening TCP sockets of a process: [{ addr, port }] from /proc/net/tcp{,6} and its fds. */
function listeners(pid) {
  const inodes = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const out = [];
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try { text = readFileSync(`/proc/net/${f}`, 'utf8'); } catch { continue; }
    for (const line of text.trim().split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c[3] !== '0A' || !inodes.has(c[9])) continue;
      const [hex, portHex] = c[1].split(':');
      const addr = f === 'tcp'
        ? [0, 1, 2, 3].map((i) => parseInt(hex.slice(6 - 2 * i, 8 - 2 * i), 16)).join('.')
        : hex === '00000000000000000000000001000000' ? '::1' : hex === '0'.repeat(32) ? '::' : `v6:${hex}`;
      out.push({ addr, port: parseInt(portHex, 16) });
    }
  }
  return out;
}

test('a single-host job listens on the loopback interface only (rendezvous and data ports)', async () => {
  const go = join(tmpdir(), `rank-listen-${process.pid}-${Date.now()}`);
  const env = await jobEnv(2, { APP_GO_FILE: go });
  const port = Number(env.TPRUN_MASTER_PORT);
  const r0 = startRank(0, env, ['hold']);
  try {
    await until(() => listeners(r0.pid).some((l) => l.port === port), 30000, 'rank 0 to listen on the rendezvous port');
    const rdv = listeners(r0.pid);
    const r1 = startRank(1, env, ['hold']);
    await until(() => r0.lines().some((l) => l.ready) && r1.lines().some((l) => l.ready), 30000, 'both ranks to be ready');
    const data = [...listeners(r0.pid), ...listeners(r1.pid)];
    assert.ok(data.length >= 2, `every rank listens for data: ${JSON.stringify(data)}`);
    for (const l of [...rdv, ...data]) assert.ok(l.addr === '127.0.0.1' || l.addr === '::1', `listens on ${l.addr}:${l.port}`);
    writeFileSync(go, '');
    await Promise.all([r0.exited, r1.exited]);
    assert.equal(r0.code, 0, r0.stderr);
    assert.equal(r1.code, 0, r1.stderr);
  } finally {
    rmSync(go, { force: true });
    r0.proc.kill('SIGKILL');
  }
});

test('junk on a rank\'s data port is refused and logged with its address; the job completes', async () => {
  const go = join(tmpdir(), `rank-data-junk-${process.pid}-${Date.now()}`);
  const env = await jobEnv(2, { APP_GO_FILE: go });
  const rs = [startRank(0, env, ['hold']), startRank(1, env, ['hold'])];
  const junk = [];
  try {
    await until(() => rs.every((r) => r.lines().some((l) => l.ready)), 30000, 'both ranks to be ready');
    const [data] = listeners(rs[1].pid);
    assert.ok(data, 'rank 1 listens for data');
    const d1 = intruder(data.port);
    junk.push(d1);
    await d1.send([Buffer.from('not a header')]);
    const d2 = intruder(data.port);
    junk.push(d2);
    const hdr = Buffer.alloc(32); // a control header claiming to be rank 0, with a made-up proof
    hdr.writeUInt32LE(0xc0000000, 0);
    hdr.writeUInt32LE(1, 4);
    await d2.send([hdr, randomBytes(32)]);
    await until(() => (rs[1].stderr.match(/refused a data connection/g) ?? []).length >= 2 || rs[1].code !== null, 30000, 'rank 1 to refuse the junk');
    assert.match(rs[1].stderr, /^tprun: rank 1 refused a data connection from 127\.0\.0\.1: malformed frame$/m);
    assert.match(rs[1].stderr, /^tprun: rank 1 refused a data connection from 127\.0\.0\.1: bad data-plane proof \(claims rank 0\)$/m);
    writeFileSync(go, '');
    await Promise.all(rs.map((r) => r.exited));
    for (const r of rs) assert.equal(r.code, 0, r.stderr);
  } finally {
    for (const d of junk) d.close();
    rmSync(go, { force: true });
    for (const r of rs) r.proc.kill('SIGKILL');
  }
});
