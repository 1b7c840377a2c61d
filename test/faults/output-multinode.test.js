// Issue #11 item 2 on the code path where a node that cannot see rank 0's files writes its own copy of
// the output (engine or checkpoint): that copy follows the same --out rule. Two ranks as two Slurm
// "nodes" (synthetic SLURM_* variables, as srun sets them), rank 1 in a mount namespace of its own whose
// output parent is a private tmpfs: it cannot see rank 0's files. Needs root for unshare/mount: skipped
// otherwise.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from '../helpers/procs.js';
import { generateCheckpoint } from 'tprun';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tprun-outmn-'));
test.after(() => fs.rmSync(work, { recursive: true, force: true }));
const probe = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs tmpfs ${work} && umount ${work}`], { encoding: 'utf8' });
const skip = probe.status === 0 ? false : `needs root for unshare -m and mount (${(probe.stderr || probe.error?.message || '').trim().split('\n')[0]})`;

const MODEL = path.join(work, 'model');
generateCheckpoint({ preset: 'brown', layers: 1, out: MODEL, seed: 6 });
const SHARED = path.join(work, 'shared'); // rank 0's view; rank 1 mounts its own tmpfs here

/** Rank r of a 2-node job; rank 1 first mounts its private disk (and `prepare`s it). Its listing of the output follows the marker line. */
function rank(r, args, { prepare = '', port, secret }) {
  const script = [
    r === 1 ? `mount -t tmpfs tmpfs "${SHARED}" || exit 99` : 'true',
    r === 1 ? prepare : 'true',
    `"${process.execPath}" "${CLI}" "$@"`,
    'rc=$?',
    'echo "@@listing"; find "$SHARED_DIR" -mindepth 1 | sort',
    'exit $rc',
  ].join('\n');
  const env = {
    PATH: process.env.PATH, HOME: work, SHARED_DIR: SHARED, TPRUN_QUIET: '1',
    SLURM_JOB_ID: '4711', SLURM_STEP_ID: '0', SLURM_NTASKS: '2', SLURM_JOB_NODELIST: 'n[1-2]', SLURM_TASKS_PER_NODE: '1(x2)',
    SLURM_NODEID: String(r), SLURM_PROCID: String(r), SLURM_LOCALID: '0',
    MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TPRUN_SECRET: secret,
    // Rank 0 waiting for a rank that refused to start gives up after this (a hang guard, not a speed claim).
    TPRUN_COMM_TIMEOUT_MS: '8000',
  };
  const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s) => (err += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 180000);
  return new Promise((res) => child.on('close', (code) => {
    clearTimeout(timer);
    const [, listing = ''] = out.split('@@listing\n');
    res({ code, err, files: listing.trim().split('\n').filter(Boolean).map((f) => path.relative(SHARED, f)) });
  }));
}

async function job(args, prepare) {
  fs.rmSync(SHARED, { recursive: true, force: true });
  fs.mkdirSync(SHARED);
  const o = { prepare, port: 20000 + Math.floor(Math.random() * 20000), secret: randomBytes(32).toString('hex') };
  return Promise.all([rank(0, args, o), rank(1, args, o)]);
}

const OUT = path.join(SHARED, 'out');
const COMMANDS = [
  ['build', ['build', '--model', MODEL, '--tp', '2', '--max-seq-len', '64', '--max-input-len', '32', '--out', OUT]],
  ['convert', ['convert', '--model', MODEL, '--tp', '2', '--out', OUT]],
];

for (const [name, args] of COMMANDS) {
  test(`${name}: the node without rank 0's files writes its own complete copy`, { skip }, async () => {
    const [r0, r1] = await job(args, '');
    assert.equal(r0.code, 0, r0.err);
    assert.equal(r1.code, 0, r1.err);
    for (const r of [r0, r1]) assert.ok(r.files.includes('out/config.json'), r.files.join(' '));
    assert.ok(!r0.files.some((f) => f.includes('rank1')) && r1.files.some((f) => f.includes('rank1')), 'each node holds its own rank');
  });

  test(`${name}: on that node, a directory of unrelated files at --out is refused there and left whole`, { skip }, async () => {
    const [r0, r1] = await job(args, `mkdir -p "${OUT}/notes" && echo work > "${OUT}/thesis.tex" && echo a > "${OUT}/notes/a.txt"`);
    assert.equal(r1.code, 2, r1.err);
    assert.match(r1.err, new RegExp(`--out ${OUT}: is not empty and was not written by tprun`));
    assert.deepEqual(r1.files, ['out', 'out/notes', 'out/notes/a.txt', 'out/thesis.tex']);
    assert.deepEqual(r0.files, [], 'rank 0 leaves no output and no temporary directory');
  });
}
