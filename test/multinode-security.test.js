// The world across hosts is authenticated with the job secret, and `--secure` encrypts it (CurveZMQ):
// a peer without the secret is refused, and a capture of the wire between the hosts (tcpdump on the
// bridge) holds a known marker sent through the world only when --secure is off. The job's secrets appear
// neither in any process's command line on the machine nor in the launcher's output.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { makeHosts, whyNoHosts, nsPids } from './helpers/netns.js';
import { must } from './helpers/must.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const WORLD = fileURLToPath(new URL('../dist/rank/world.js', import.meta.url));
const skip = whyNoHosts();
const noTcpdump = skip ?? (has('tcpdump') ? undefined : 'tcpdump (Debian tcpdump) is not installed');
let H;
let A;
let B;
let tmp;

function has(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

before(async () => {
  if (skip) return;
  H = await makeHosts(2);
  [A, B] = H.hosts;
  tmp = mkdtempSync(join(tmpdir(), 'tprun-sec-'));
});

after(() => {
  H?.teardown();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nodeE = (code) => ['node', '--input-type=module', '-e', code];

async function nothingLeft() {
  const end = Date.now() + 10000;
  while (Date.now() < end) {
    if (!H.pidsOf(A).length && !H.pidsOf(B).length && !nsPids(H.head).length) return true;
    await sleep(100);
  }
  return false;
}

test('a peer without the job secret is refused; the real job still completes', { skip }, async () => {
  // Rank 1 (on B) waits until an intruder on B has tried to join as rank 1 with a wrong secret.
  const gate = join(tmp, 'intruder-done');
  const app = `
    import { initWorld } from ${JSON.stringify(WORLD)};
    import { existsSync } from 'node:fs';
    if (process.env.TPRUN_RANK === '0') console.log('port ' + process.env.TPRUN_MASTER_PORT);
    if (process.env.TPRUN_RANK === '1') while (!existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 50));
    const w = await initWorld({ timeoutMs: 30000 });
    const a = new Int32Array(16).fill(w.rank + 1);
    await w.allReduce(a);
    console.log('sum ' + a[0]);
    await w.close();`;
  const job = execa('node', [CLI, '--hosts', `${A.addr}:1,${B.addr}:1`, '--', ...nodeE(app)], {
    env: H.env, reject: false, all: true,
  });
  // The intruder knows everything but the secret: address, port (rank 0 prints it), world size.
  let out = '';
  job.all.on('data', (d) => (out += d));
  let masterPort;
  for (let t = 0; t < 400 && !masterPort; t++) {
    await sleep(50);
    masterPort = /^port (\d+)$/m.exec(out)?.[1];
  }
  assert.ok(masterPort, `rank 0 did not start: ${out}`);
  const intruder = await execa('ip', ['netns', 'exec', B.ns, ...nodeE(`
    import { initWorld } from ${JSON.stringify(WORLD)};
    try { await initWorld({ timeoutMs: 20000 }); console.log('JOINED'); } catch (e) { console.log('REFUSED ' + e.message); }
    process.exit(0);`)], {
    env: { PATH: process.env.PATH, TPRUN_RANK: '1', TPRUN_WORLD_SIZE: '2', TPRUN_MASTER_ADDR: A.addr, TPRUN_MASTER_PORT: masterPort, TPRUN_SECRET: 'cd'.repeat(32), TPRUN_JOB_ID: 'x' },
    extendEnv: false, reject: false, all: true,
  });
  execFileSync('touch', [gate]);
  const res = await job;
  assert.match(intruder.all, /^REFUSED /m, intruder.all);
  assert.doesNotMatch(intruder.all, /JOINED/);
  assert.equal(res.exitCode, 0, res.all);
  assert.match(res.all, /rank 0 refused a connection from .*wrong job secret/);
  assert.equal((res.all.match(/^sum 3$/gm) ?? []).length, 2, res.all);
  assert.ok(await nothingLeft());
});

/** Runs a 2-rank job (one rank per host) under tcpdump on host B's bridge port; returns the capture and the output. */
async function captured(extra) {
  const pcap = join(tmp, `cap-${Date.now()}.pcap`);
  const dump = spawn('ip', ['netns', 'exec', H.head, 'tcpdump', '-i', 'v1', '-U', '-s', '0', '-w', pcap, 'tcp or udp'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  dump.stderr.on('data', (d) => (err += d));
  while (!err.includes('listening on')) {
    if (dump.exitCode !== null) throw new Error(`tcpdump: ${err}`);
    await sleep(50);
  }
  const app = `
    import { initWorld } from ${JSON.stringify(WORLD)};
    const w = await initWorld({ timeoutMs: 30000 });
    const marker = new TextEncoder().encode('TPRUN-PLAINTEXT-MARKER-'.repeat(64));
    const buf = w.rank === 0 ? marker : new Uint8Array(marker.length);
    await w.broadcast(buf, 0);
    const obj = await w.broadcastObject(w.rank === 0 ? { note: 'TPRUN-OBJECT-MARKER' } : undefined, 0);
    // Each rank checks that none of the job's secrets shows up in any command line on this machine.
    const fs = await import('node:fs');
    const secrets = [process.env.TPRUN_SECRET, process.env.TPRUN_CURVE_SERVER_SECRET].filter(Boolean);
    const seen = [];
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\\d+$/.test(d)) continue;
      try { const c = fs.readFileSync('/proc/' + d + '/cmdline', 'latin1'); if (secrets.some((s) => c.includes(s))) seen.push(d); } catch {}
    }
    const same = Buffer.from(buf).equals(Buffer.from(marker)) && obj.note === 'TPRUN-OBJECT-MARKER';
    console.log(JSON.stringify({ rank: w.rank, same, curve: !!process.env.TPRUN_CURVE_SERVER_PUBLIC, secrets: secrets.length, seen }));
    if (w.rank === 0) console.error('SECRETS ' + secrets.join(' '));
    await w.close();`;
  const res = await execa('node', [CLI, '--hosts', `${A.addr}:1,${B.addr}:1`, ...extra, '--', ...nodeE(app)], { env: H.env, reject: false, all: true });
  // tcpdump may lag behind the wire on a busy machine: send an end marker from host B to host A (UDP,
  // after the job) and stop only once the capture holds it; packets are written in order, so everything
  // the job sent is in the file by then.
  const end = `TPRUN-CAPTURE-END-${Math.random().toString(16).slice(2)}`;
  const ping = `const s = require('dgram').createSocket('udp4'); s.send(Buffer.from(${JSON.stringify(end)}), 9, ${JSON.stringify(A.addr)}, () => s.close());`;
  for (let t = 0; !readFileSync(pcap).includes(end); t++) {
    if (t > 100) throw new Error('the capture never saw the end marker');
    if (t % 5 === 0) execFileSync('ip', ['netns', 'exec', B.ns, 'node', '-e', ping]);
    await sleep(100);
  }
  dump.kill('SIGINT');
  await new Promise((r) => dump.once('exit', r));
  return { res, wire: readFileSync(pcap) };
}

function check(res, secure) {
  assert.equal(res.exitCode, 0, res.all);
  const lines = res.all.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).sort((x, y) => x.rank - y.rank);
  assert.deepEqual(lines, [0, 1].map((rank) => ({ rank, same: true, curve: secure, secrets: secure ? 2 : 1, seen: [] })));
  // The launcher itself prints no secret: only the rank's deliberate SECRETS line holds them.
  const secrets = must(/^SECRETS (.*)$/m.exec(res.all), 'the SECRETS line')[1].split(' ');
  const rest = res.all.replace(/^SECRETS .*$/m, '');
  for (const s of secrets) assert.ok(!rest.includes(s));
}

test('without --secure the wire carries the marker in clear', { skip: noTcpdump }, async () => {
  const { res, wire } = await captured([]);
  check(res, false);
  assert.ok(wire.includes('TPRUN-PLAINTEXT-MARKER-TPRUN-PLAINTEXT-MARKER-'), `the capture (${wire.length} bytes) saw the world traffic`);
  assert.ok(wire.includes('TPRUN-OBJECT-MARKER'));
  assert.ok(await nothingLeft());
});

test('with --secure (CurveZMQ, keys made per job) the wire does not', { skip: noTcpdump }, async () => {
  const { res, wire } = await captured(['--secure']);
  check(res, true);
  // The traffic was captured (at least the marker's size in encrypted bytes) but reads as noise.
  assert.ok(wire.length > 64 * 23, `capture of ${wire.length} bytes`);
  assert.ok(!wire.includes('TPRUN-PLAINTEXT-MARKER'));
  assert.ok(!wire.includes('TPRUN-OBJECT-MARKER'));
  assert.ok(await nothingLeft());
});
