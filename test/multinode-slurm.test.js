// Slurm: `srun -N 2 -n 4` on a real Slurm (slurmctld + one slurmd per namespace host, munge auth) forms a
// tprun world from the SLURM_* variables, meeting at the first node of SLURM_JOB_NODELIST (bracket
// syntax); `srun ... tprun convert --tp 4` joins it. A synthetic-SLURM_* run needs no root at all.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { makeHosts, whyNoHosts, nsPids } from './helpers/netns.js';
import { startSlurm, whyNoSlurm } from './helpers/slurm.js';
import { must } from './helpers/must.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist/cli.js');
const WORLD = join(ROOT, 'dist/rank/world.js');
const skip = whyNoHosts() ?? whyNoSlurm();
let H;
let S;
let tmp;
let baseline;

let noCluster; // why the Slurm daemons could not run on this machine (its cgroups, say): those tests skip

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'tprun-slurm-'));
  if (skip) return;
  H = await makeHosts(2);
  try {
    S = await startSlurm(H);
  } catch (e) {
    noCluster = `Slurm could not start on this machine: ${e.message.split('\n').slice(0, 3).join(' ')}`;
    return;
  }
  baseline = H.hosts.map((h) => new Set(H.pidsOf(h)));
});

after(() => {
  S?.stop();
  H?.teardown();
  rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nodeE = (code) => ['node', '--input-type=module', '-e', code];

/** Job processes left on the hosts (the Slurm daemons and sshd aside). */
async function leftovers() {
  const end = Date.now() + 10000;
  for (;;) {
    const left = H.hosts.flatMap((h, i) => H.pidsOf(h).filter((p) => !baseline[i].has(p)));
    if (!left.length || Date.now() > end) return left;
    await sleep(100);
  }
}

const WORLD_APP = `
  import { initWorld } from ${JSON.stringify(WORLD)};
  const w = await initWorld({ timeoutMs: 30000 });
  const a = new Float64Array(4096).fill(w.rank + 1);
  await w.allReduce(a);
  console.log(JSON.stringify({ rank: w.rank, size: w.size, local: w.localRank, node: w.nodeRank, source: w.source, sum: a[4095] }));
  await w.close();`;

test('srun -N 2 -n 4 node app.js forms one world across the two nodes', { skip }, async (t) => {
  if (noCluster) return t.skip(noCluster);
  const [cmd, args] = S.srun(['-N', '2', '-n', '4', '--export', 'ALL', ...nodeE(WORLD_APP)]);
  const res = await execa(cmd, args, { env: { ...S.env, TPRUN_SECRET: randomBytes(32).toString('hex') }, reject: false, all: true, timeout: 90000 });
  assert.equal(res.exitCode, 0, res.all);
  const got = res.all.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).sort((x, y) => x.rank - y.rank);
  assert.deepEqual(got, [0, 1, 2, 3].map((r) => ({ rank: r, size: 4, local: r % 2, node: r >> 1, source: 'slurm', sum: 10 })));
  assert.deepEqual(await leftovers(), []);
});

test('srun ... tprun convert --tp 4 joins the Slurm world and writes all four ranks', { skip }, async (t) => {
  if (noCluster) return t.skip(noCluster);
  const out = join(tmp, 'ckpt');
  const [cmd, args] = S.srun(['-N', '2', '-n', '4', '--export', 'ALL', 'node', CLI, 'convert', '--model', join(ROOT, 'models/brown-llama-a'), '--tp', '4', '--out', out]);
  const res = await execa(cmd, args, { env: { ...S.env, TPRUN_SECRET: randomBytes(32).toString('hex') }, reject: false, all: true, timeout: 120000 });
  assert.equal(res.exitCode, 0, res.all);
  assert.deepEqual(readdirSync(out).filter((f) => f.endsWith('.safetensors')).sort(), [0, 1, 2, 3].map((r) => `rank${r}.safetensors`));
  assert.ok(existsSync(join(out, 'config.json')));
  assert.deepEqual(await leftovers(), []);
});

test('synthetic SLURM_* variables: two local processes meet at the first host of a bracketed node list', async () => {
  // No slurmd needed: exactly what srun would set for a 2-task step on node list 127.0.0.[1-2].
  const job = String(100000 + Math.floor(Math.random() * 800000));
  const common = {
    PATH: process.env.PATH, SLURM_JOB_ID: job, SLURM_STEP_ID: '0', SLURM_NTASKS: '2', SLURM_JOB_NODELIST: '127.0.0.[1-2]',
    SLURM_NODEID: '0', SLURM_TASKS_PER_NODE: '2', TPRUN_SECRET: randomBytes(32).toString('hex'),
  };
  const runs = [0, 1].map((r) => execa(nodeE(WORLD_APP)[0], nodeE(WORLD_APP).slice(1), {
    env: { ...common, SLURM_PROCID: String(r), SLURM_LOCALID: String(r) }, extendEnv: false, reject: false, all: true, timeout: 60000,
  }));
  const res = await Promise.all(runs);
  for (const r of res) assert.equal(r.exitCode, 0, r.all);
  const got = res.map((r) => JSON.parse(must(r.all.split('\n').find((l) => l.startsWith('{')), 'a JSON line')));
  assert.deepEqual(got, [0, 1].map((r) => ({ rank: r, size: 2, local: r, node: 0, source: 'slurm', sum: 3 })));
});

test('synthetic SLURM_* variables with MASTER_ADDR/MASTER_PORT: those name the rendezvous, not the node list', async () => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const common = {
    PATH: process.env.PATH, SLURM_JOB_ID: '4242', SLURM_STEP_ID: '0', SLURM_NTASKS: '2',
    // Unresolvable on purpose: using it would fail the rendezvous.
    SLURM_JOB_NODELIST: 'no-such-node[07-08]', SLURM_NODEID: '0', SLURM_TASKS_PER_NODE: '2',
    MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TPRUN_SECRET: randomBytes(32).toString('hex'),
  };
  const res = await Promise.all([0, 1].map((r) => execa(nodeE(WORLD_APP)[0], nodeE(WORLD_APP).slice(1), {
    env: { ...common, SLURM_PROCID: String(r), SLURM_LOCALID: String(r) }, extendEnv: false, reject: false, all: true, timeout: 60000,
  })));
  for (const r of res) assert.equal(r.exitCode, 0, r.all);
  assert.deepEqual(res.map((r) => JSON.parse(must(r.all.split('\n').find((l) => l.startsWith('{')), 'a JSON line')).sum), [3, 3]);
});
