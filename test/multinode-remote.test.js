// spawnRemote over real ssh into network-namespace hosts: quoting, env without secrets in process lists,
// exit codes, signal forwarding, and a rank that exits by itself when its ssh connection vanishes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { makeHosts, whyNoHosts } from './helpers/netns.js';
import { spawnRemote } from '../dist/launcher/remote.js';
import { must } from './helpers/must.js';

const skip = whyNoHosts();
let H;
const saved = {};

before(async () => {
  if (skip) return;
  H = await makeHosts(1);
  for (const [k, v] of Object.entries(H.env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
});

after(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  H?.teardown();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until nothing but the sshd listener runs in the host's namespace; returns what is left. */
async function settle(h, ms = 8000) {
  const end = Date.now() + ms;
  let left = H.pidsOf(h);
  while (left.length && Date.now() < end) {
    await sleep(100);
    left = H.pidsOf(h);
  }
  return left.map((p) => {
    try {
      return `${p} ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ')}`;
    } catch {
      return String(p);
    }
  });
}

function collect(child) {
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return () => ({ out, err });
}

/** A node program for the remote side, passed with -e (so it travels as one hostile-looking argument). */
const REPORT = `
const fs = require('fs');
const secret = process.env.TPRUN_SECRET;
let seen = [];
for (const d of fs.readdirSync('/proc')) {
  if (!/^\\d+$/.test(d)) continue;
  try { if (fs.readFileSync('/proc/' + d + '/cmdline', 'latin1').includes(secret)) seen.push(d); } catch {}
}
console.log(JSON.stringify({ argv: process.argv.slice(1), secret, x: process.env.X, cwd: process.cwd(), seen }));
`;

test('argv and env arrive exactly; the secret is in no process list on either side', { skip }, async () => {
  const h = H.hosts[0];
  const secret = 'ab'.repeat(32);
  const hostile = ['a b', "it's", '"q"', '$(touch /tmp/tprun-pwned)', '`id`', '; exit 9', '\\', '', '*', 'two\nlines', '$HOME', '--', '-e'];
  const child = spawnRemote(h.addr, ['node', '-e', REPORT, ...hostile], { TPRUN_SECRET: secret, X: "v'a\nl $PATH" }, { cwd: '/tmp' });
  const got = collect(child);
  // While it runs, the local ssh client's command line holds no secret either.
  const localCmd = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
  assert.ok(!localCmd.includes(secret));
  const res = await child;
  assert.equal(res.exitCode, 0, got().err);
  const r = JSON.parse(got().out);
  assert.deepEqual(r.argv, hostile);
  assert.equal(r.secret, secret);
  assert.equal(r.x, "v'a\nl $PATH");
  assert.equal(r.cwd, '/tmp');
  assert.deepEqual(r.seen, [], 'the secret showed up in a remote command line');
  assert.throws(() => readFileSync('/tmp/tprun-pwned'));
  assert.deepEqual(await settle(h), []);
});

test('exit codes come through; a missing directory falls back to home unless required', { skip }, async () => {
  const h = H.hosts[0];
  assert.equal((await spawnRemote(h.addr, ['sh', '-c', 'exit 7'], {}, {})).exitCode, 7);
  const c = spawnRemote(h.addr, ['pwd'], {}, { cwd: '/nonexistent/tprun' });
  const got = collect(c);
  assert.equal((await c).exitCode, 0);
  assert.equal(got().out.trim(), '/root');
  const c2 = spawnRemote(h.addr, ['pwd'], {}, { cwd: '/nonexistent/tprun', cwdRequired: true });
  const got2 = collect(c2);
  assert.equal((await c2).exitCode, 2);
  assert.match(got2().err, new RegExp(`tprun: ${h.addr.replace(/\./g, '\\.')}: cannot change to directory /nonexistent/tprun`));
  const c3 = spawnRemote(h.addr, ['/nonexistent/prog'], {}, {});
  assert.equal((await c3).exitCode, 127);
});

test('kill(SIGINT) reaches the remote process group; children of the rank go too', { skip }, async () => {
  const h = H.hosts[0];
  // The rank forks a grandchild that would outlive it; both must go.
  const prog = `
    require('child_process').spawn('sleep', ['300'], { stdio: 'ignore' });
    process.on('SIGINT', () => { console.log('got SIGINT'); process.exit(3); });
    console.log('ready'); setInterval(() => {}, 1000);`;
  const child = spawnRemote(h.addr, ['node', '-e', prog], {}, { graceSec: 1 });
  const got = collect(child);
  while (!got().out.includes('ready')) await sleep(50);
  child.kill('SIGINT');
  const res = await child;
  assert.equal(got().out, 'ready\ngot SIGINT\n');
  assert.equal(res.exitCode, 3);
  assert.deepEqual(await settle(h), []);
});

test('killing the ssh client (lost connection) makes the remote rank exit by itself', { skip }, async () => {
  const h = H.hosts[0];
  // sshd sends SIGHUP when the connection drops; these ranks ignore it (as a nohup'd program would), so
  // only the bootstrap's watchdog can end them. One obeys SIGTERM; the other needs the SIGKILL after the
  // grace period.
  const hup = 'process.on("SIGHUP", () => {}); setInterval(() => {}, 1000);';
  for (const prog of [`${hup} console.log("ready")`, `${hup} process.on("SIGTERM", () => {}); console.log("ready")`]) {
    const child = spawnRemote(h.addr, ['node', '-e', prog], {}, { graceSec: 1 });
    const got = collect(child);
    while (!got().out.includes('ready')) await sleep(50);
    assert.ok(H.pidsOf(h).length > 0, 'the rank runs in the host namespace');
    process.kill(must(child.pid, 'the ssh client pid'), 'SIGKILL'); // the ssh client, not through spawnRemote's kill
    await child;
    assert.deepEqual(await settle(h), []);
  }
});

test('kill(SIGKILL) ends a rank that ignores SIGTERM and SIGHUP without waiting for the grace period', { skip }, async () => {
  const h = H.hosts[0];
  const prog = 'process.on("SIGHUP", () => {}); process.on("SIGTERM", () => {}); setInterval(() => {}, 1000); console.log("ready")';
  // A grace period far longer than the settle wait below: only the forwarded KILL can end it in time.
  const child = spawnRemote(h.addr, ['node', '-e', prog], {}, { graceSec: 120 });
  const got = collect(child);
  while (!got().out.includes('ready')) await sleep(50);
  child.kill('SIGTERM');
  child.kill('SIGKILL');
  await child;
  assert.deepEqual(await settle(h), []);
});

test('localAddressToward: the address a local rank 0 is reached by from a remote host', { skip }, async () => {
  const h = H.hosts[0];
  // Asked from the launcher's (head) namespace, through an ssh_config alias as well as by address.
  const alias = `${H.dir}/alias_config`;
  writeFileSync(alias, `Host tprun-alias\n  HostName ${h.addr}\nInclude ${H.sshConfig}\n`);
  const code = `import('${new URL('../dist/launcher/remote.js', import.meta.url).pathname}').then(async (m) =>
    console.log(await m.localAddressToward(process.argv[1]), await m.localAddressToward('tprun-alias', ['-F', process.argv[2]])))`;
  const out = execFileSync('ip', ['netns', 'exec', H.head, 'node', '-e', code, h.addr, alias], { encoding: 'utf8', env: { ...process.env, TPRUN_SSH: 'ssh', TPRUN_SSH_ARGS: '' } });
  assert.equal(out.trim(), `${H.subnet}.1 ${H.subnet}.1`);
});

test('a host whose key does not match the job\'s known_hosts is refused (no rank starts)', { skip }, async () => {
  const h = H.hosts[0];
  const wrong = `${H.dir}/wrong_known_hosts`;
  const other = execFileSync('sh', ['-c', `ssh-keygen -q -t ed25519 -N '' -f ${H.dir}/other && cat ${H.dir}/other.pub`], { encoding: 'utf8' });
  writeFileSync(wrong, `${h.addr} ${other.trim().split(' ').slice(0, 2).join(' ')}\n`);
  const child = spawnRemote(h.addr, ['touch', `${H.dir}/ran`], {}, { sshArgs: ['-o', `UserKnownHostsFile=${wrong}`] });
  const got = collect(child);
  assert.equal((await child).exitCode, 255);
  assert.match(got().err, /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
  assert.throws(() => readFileSync(`${H.dir}/ran`));
});
