// `tprun --hosts/--hostfile` across two network-namespace hosts reached over real ssh, and `mpirun`
// (Open MPI's ssh launcher through the same keys) across the same hosts. After every case nothing of the
// job may be left on any host, nor on the launcher's side (ssh clients live in the head namespace).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { makeHosts, whyNoHosts, nsPids } from './helpers/netns.js';
import { must } from './helpers/must.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const WORLD = fileURLToPath(new URL('../dist/rank/world.js', import.meta.url));
const skip = whyNoHosts();
const noMpi = skip ?? (hasMpirun() ? undefined : 'mpirun (Debian openmpi-bin) is not installed');
let H;
let A;
let B;
let tmp;

function hasMpirun() {
  try {
    execFileSync('sh', ['-c', 'command -v mpirun'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

before(async () => {
  if (skip) return;
  H = await makeHosts(2);
  [A, B] = H.hosts;
  tmp = mkdtempSync(join(tmpdir(), 'tprun-mn-'));
});

after(() => {
  H?.teardown();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Everything that still runs on the hosts (sshd listeners aside) and on the launcher's head namespace. */
async function leftovers(ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const left = { A: H.pidsOf(A), B: H.pidsOf(B), head: nsPids(H.head) };
    if (!left.A.length && !left.B.length && !left.head.length) return left;
    if (Date.now() > end) return left;
    await sleep(100);
  }
}
const NOTHING = { A: [], B: [], head: [] };

/** Starts the launcher (in the root namespace; its ssh enters the head namespace, see helpers/netns.js). */
function tprun(args, extraEnv = {}) {
  return execa('node', [CLI, ...args], { env: { ...H.env, ...extraEnv }, reject: false, all: true, stripFinalNewline: false });
}

/** A rank program passed with -e: nothing of it needs to exist on the hosts' disks. */
const nodeE = (code) => ['node', '--input-type=module', '-e', code];

test('--hosts A:2,B:2: four ranks, two per host, env and -x forwards, output tagged', { skip }, async () => {
  const res = await tprun([
    '--hosts', `${A.addr}:2,${B.addr}:2`, '--tag-output', '-x', 'TPRUN_TEST_FWD', '-x', 'TPRUN_TEST_SET=a b',
    '--', 'sh', '-c', 'echo "r=$TPRUN_RANK n=$TPRUN_WORLD_SIZE lr=$TPRUN_LOCAL_RANK ls=$TPRUN_LOCAL_WORLD_SIZE node=$TPRUN_NODE_RANK m=$MASTER_ADDR fwd=$TPRUN_TEST_FWD set=$TPRUN_TEST_SET at=$(hostname -I)"',
  ], { TPRUN_TEST_FWD: "it's $forwarded" });
  assert.equal(res.exitCode, 0, res.all);
  const lines = res.all.split('\n').filter(Boolean).sort();
  const at = (r) => (r < 2 ? A.addr : B.addr);
  assert.deepEqual(lines, [0, 1, 2, 3].map((r) =>
    `[${r}@${at(r)}] r=${r} n=4 lr=${r % 2} ls=2 node=${r >> 1} m=${A.addr} fwd=it's $forwarded set=a b at=${at(r)} `));
  assert.deepEqual(await leftovers(), NOTHING);
});

test('remote output is tagged with rank and host', { skip }, async () => {
  const res = await tprun(['--hosts', `${A.addr}:1,${B.addr}:1`, '--tag-output', '--', 'echo', 'hi']);
  assert.equal(res.exitCode, 0, res.all);
  for (const line of res.all.trim().split('\n')) assert.match(line, new RegExp(`^\\[\\d+ ?[@ ,:/]${H.subnet.replace(/\./g, '\\.')}\\.\\d+\\] hi$`));
});

test('--hostfile: a world of 4 ranks over two hosts all-reduces', { skip }, async () => {
  const hf = join(tmp, 'hosts');
  writeFileSync(hf, `# test hosts\n${A.addr} slots=2\n\n${B.addr} slots=2 # second\n`);
  const app = `
    import { initWorld } from ${JSON.stringify(WORLD)};
    const w = await initWorld({ timeoutMs: 30000 });
    const a = new Float32Array(1 << 18).fill(w.rank + 1);
    await w.allReduce(a);
    const ok = a.every((v) => v === 10);
    console.log(JSON.stringify({ rank: w.rank, size: w.size, node: w.nodeRank, ok }));
    await w.close();`;
  const res = await tprun(['--hostfile', hf, '-n', '4', '--', ...nodeE(app)]);
  assert.equal(res.exitCode, 0, res.all);
  const got = res.all.trim().split('\n').map((l) => JSON.parse(l)).sort((x, y) => x.rank - y.rank);
  assert.deepEqual(got, [0, 1, 2, 3].map((r) => ({ rank: r, size: 4, node: r >> 1, ok: true })));
  assert.deepEqual(await leftovers(), NOTHING);
});

test('rank 0 on the launcher\'s machine, rank 1 on a remote host: one world', { skip }, async () => {
  const app = `
    import { initWorld } from ${JSON.stringify(WORLD)};
    const w = await initWorld({ timeoutMs: 10000 });
    const a = new Int32Array(8).fill(w.rank + 1);
    await w.allReduce(a);
    console.log('sum ' + a[0]);
    await w.close();`;
  // The launcher runs in the head namespace, which is "this machine" for the hosts.
  const res = await execa('ip', ['netns', 'exec', H.head, 'node', CLI, '--hosts', `localhost:1,${A.addr}:1`, '--', ...nodeE(app)],
    { env: { ...process.env, ...H.env }, reject: false, all: true, timeout: 60000 });
  assert.equal(res.exitCode, 0, res.all);
  assert.equal(res.all.split('\n').filter((l) => l === 'sum 3').length, 2, res.all);
  assert.deepEqual(await leftovers(), NOTHING);
});

// Ranks that print `ready` and then wait forever (one of them ignores SIGTERM: only SIGKILL ends it).
const WAITER = `
  const r = Number(process.env.TPRUN_RANK);
  if (r === 2) process.on('SIGTERM', () => {});
  console.log('ready ' + r);
  setInterval(() => {}, 1000);`;

async function waitReady(child, n) {
  let all = '';
  child.all.on('data', (d) => (all += d));
  const end = Date.now() + 30000;
  while ((all.match(/ready/g) ?? []).length < n) {
    if (Date.now() > end || child.exitCode !== null) throw new Error(`ranks not ready: ${all}`);
    await sleep(50);
  }
}

test('fail-fast across hosts: a remote rank dying ends all, nothing left on any host', { skip }, async () => {
  const app = `
    const r = Number(process.env.TPRUN_RANK);
    if (r === 3) setTimeout(() => process.exit(5), 300); else setInterval(() => {}, 1000);
    if (r === 1) process.on('SIGTERM', () => {});`;
  const res = await tprun(['--hosts', `${A.addr}:2,${B.addr}:2`, '--grace', '1', '--', ...nodeE(app)]);
  assert.equal(res.exitCode, 5, res.all);
  assert.match(res.all, /rank 3 .*exited with code 5/);
  assert.deepEqual(await leftovers(), NOTHING);
});

test('SIGINT to the launcher stops every rank on every host', { skip }, async () => {
  const child = tprun(['--hosts', `${A.addr}:2,${B.addr}:2`, '--grace', '1', '--', ...nodeE(WAITER)]);
  await waitReady(child, 4);
  assert.equal(H.pidsOf(A).length > 0 && H.pidsOf(B).length > 0, true);
  child.kill('SIGINT');
  const res = await child;
  assert.equal(res.exitCode, 130, res.all);
  assert.deepEqual(await leftovers(), NOTHING);
});

test('launcher and ssh clients killed (lost connections): remote ranks exit by themselves', { skip }, async () => {
  const child = tprun(['--hosts', `${A.addr}:2,${B.addr}:2`, '--grace', '1', '--', ...nodeE(WAITER)]);
  await waitReady(child, 4);
  const clients = nsPids(H.head);
  assert.equal(clients.length, 4, 'one ssh client per remote rank');
  // Nobody is left to send a signal: only the remote watchdogs can end the ranks.
  child.kill('SIGKILL');
  for (const p of clients) process.kill(p, 'SIGKILL');
  await child;
  assert.deepEqual(await leftovers(), NOTHING);
});

test('an unreachable host fails the job fast with ssh\'s reason, nothing left behind', { skip }, async () => {
  const gone = `${H.subnet}.99`; // on the subnet, but nobody answers
  const res = await tprun(['--hosts', `${A.addr}:1,${gone}:1`, '--grace', '1', '--', 'sleep', '60']);
  assert.equal(res.exitCode, 255, res.all);
  assert.match(res.all, new RegExp(`ssh: connect to host ${gone.replace(/\./g, '\\.')} port 22: `));
  assert.match(res.all, new RegExp(`rank 1: cannot reach ${gone.replace(/\./g, '\\.')} over ssh \\(exit 255\\)`));
  assert.deepEqual(await leftovers(), NOTHING);
});

test('a bad hostfile is refused naming file:line, exit 2, nothing started', { skip }, async () => {
  const hf = join(tmp, 'bad-hosts');
  writeFileSync(hf, `${A.addr} slots=2\n${B.addr} slots=two\n`);
  const res = await tprun(['--hostfile', hf, '-n', '2', '--', 'true']);
  assert.equal(res.exitCode, 2);
  assert.equal(res.all.trim(), `tprun: ${hf}:2: slots must be a positive integer, got 'two'`);
  const res2 = await tprun(['--hosts', `${A.addr}:1`, '-n', '2', '--', 'true']);
  assert.equal(res2.exitCode, 2);
  assert.match(res2.all, /-n 2 needs 2 slots but the hosts give 1/);
});

test('mpirun (Open MPI over ssh) across the hosts forms a tprun world', { skip: noMpi }, async () => {
  const app = `
    import { initWorld } from ${JSON.stringify(WORLD)};
    const w = await initWorld({ timeoutMs: 30000 });
    const a = new Int32Array(1000).fill(w.rank);
    await w.allReduce(a);
    console.log(JSON.stringify({ rank: w.rank, size: w.size, source: w.source, sum: a[999] }));
    await w.close();`;
  const port = 20000 + Math.floor(Math.random() * 20000);
  const res = await execa(...mpirunArgs(['-x', `MASTER_ADDR=${A.addr}`, '-x', `MASTER_PORT=${port}`, ...nodeE(app)]), { reject: false, all: true, timeout: 60000 });
  assert.equal(res.exitCode, 0, res.all);
  const got = res.all.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).sort((x, y) => x.rank - y.rank);
  assert.deepEqual(got, [0, 1, 2, 3].map((r) => ({ rank: r, size: 4, source: 'openmpi', sum: 6 })));
  assert.deepEqual(await leftovers(), NOTHING);
});

/**
 * mpirun in the head namespace, Open MPI's ssh launcher using the test keys, TCP on the test subnet.
 * @param {string[]} cmd @returns {[string, string[]]}
 */
function mpirunArgs(cmd) {
  const net = `${H.subnet}.0/24`;
  return ['ip', ['netns', 'exec', H.head, 'mpirun', '--allow-run-as-root', '--host', `${A.addr}:2,${B.addr}:2`, '-np', '4',
    '--mca', 'plm_rsh_args', H.sshArgs.join(' '), '--mca', 'oob_tcp_if_include', net, '--mca', 'btl_tcp_if_include', net, ...cmd]];
}

test('tprun bench multinode prints its JSON lines (tprun side; Open MPI skipped to keep the test short)', { skip }, async () => {
  const res = await execa('node', [CLI, 'bench', 'multinode', '--sizes', '4096', '--no-mpi', '--json'], { reject: false, all: true, timeout: 120000 });
  assert.equal(res.exitCode, 0, res.all);
  const rows = res.all.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  assert.equal(rows.length, 1, res.all);
  assert.equal(rows[0].impl, 'tprun');
  assert.equal(rows[0].op, 'allreduce');
  assert.equal(rows[0].bytes, 4096);
  assert.equal(rows[0].ranks, 2);
  assert.equal(rows[0].hosts, 2);
  assert.ok(rows[0].us > 0);
});

test('pipeline parallelism across the hosts: pp 2 with one stage per host gives transformers\' greedy tokens', { skip }, async () => {
  const REF = JSON.parse((await import('node:fs')).readFileSync(new URL('../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));
  const engine = join(tmp, 'brown-pp2');
  const b = await execa('node', [CLI, 'build', '--model', fileURLToPath(new URL('../models/brown-llama-a', import.meta.url)), '--pp', '2',
    '--max-seq-len', '128', '--max-input-len', '64', '--out', engine, '-q'], { reject: false, all: true });
  assert.equal(b.exitCode, 0, b.all);
  const p = REF.prompts[1];
  const res = await tprun(['--hosts', `${A.addr}:1,${B.addr}:1`, '--', process.execPath, CLI, 'generate', '--engine', engine,
    '--input-ids', p.input_ids.join(','), '--max-new-tokens', '12', '--ignore-eos', '--json', '-q']);
  assert.equal(res.exitCode, 0, res.all);
  const out = JSON.parse(must(res.stdout.split('\n').find((l) => l.startsWith('{')), 'a JSON line'));
  assert.deepEqual(out.new_ids, p.greedy_new_ids.slice(0, 12));
  assert.deepEqual(await leftovers(), NOTHING);
});
