// Environment knobs are read one way (src/util/env.ts): 0/1 switches and whole numbers, anything else
// refused in one line naming the variable, exit 2, no output left behind. Each knob is checked where it
// is read: the launcher, a build (main thread), and the ranks of a real `tprun -n 2` launch (the world
// reads its knobs inside a rank: the refusal must still reach the user as one line and fail the job).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, runTprun } from './helpers/procs.js';
import { onOff, oneOf, wholeNumber } from '../dist/util/env.js';

const MODEL = fileURLToPath(new URL('../models/brown-llama-a', import.meta.url));
let koffi = true;
try { await import('koffi'); } catch { koffi = false; }

test('onOff takes unset, empty, 0 and 1 and refuses anything else naming the variable; wholeNumber takes digits only', () => {
  assert.equal(onOff('X', {}), true);
  assert.equal(onOff('X', { X: '' }), true);
  assert.equal(onOff('X', { X: '1' }), true);
  assert.equal(onOff('X', { X: '0' }), false);
  // A switch that is off unless asked for (TPRUN_SHM_EARLY, TPRUN_ORT_SPIN): unset or empty is the default.
  assert.equal(onOff('X', {}, false), false);
  assert.equal(onOff('X', { X: '' }, false), false);
  assert.equal(onOff('X', { X: '1' }, false), true);
  assert.throws(() => onOff('X', { X: 'yes' }, false), /X=yes: not 0 \(off\) or 1 \(on\)/);
  for (const v of ['off', 'no', 'false', 'true', '2', ' 0']) {
    assert.throws(() => onOff('X', { X: v }), (/** @type {any} */ e) => e.name === 'InputError' && e.exitCode === 2 && e.message === `X=${v}: not 0 (off) or 1 (on)`, v);
  }
  assert.equal(wholeNumber('N', 7, {}), 7);
  assert.equal(wholeNumber('N', 7, { N: '' }), 7);
  assert.equal(wholeNumber('N', 7, { N: '0' }), 0);
  assert.equal(wholeNumber('N', 7, { N: '65536' }), 65536);
  assert.equal(oneOf('T', ['zmq', 'unix'], {}), undefined);
  assert.equal(oneOf('T', ['zmq', 'unix'], { T: 'unix' }), 'unix'); // the helper alone (TPRUN_TRANSPORT takes shm or zmq)
  assert.throws(() => oneOf('T', ['zmq', 'unix'], { T: 'tcp' }), (/** @type {any} */ e) => e.name === 'InputError' && e.message === 'T=tcp: not zmq or unix');
  for (const v of ['abc', '-1', '1.5', '32k', '1e3', '0x10', ' 8', '99999999999999999999']) {
    assert.throws(() => wholeNumber('N', 7, { N: v }), (/** @type {any} */ e) => e.name === 'InputError' && e.message === `N=${v}: not a whole number >= 0`, v);
  }
});

/** The user's view of a refusal: one line naming the variable, no stack, the job's exit non-zero, nothing left running. */
function refused(r, name, value, code = 2) {
  assert.equal(r.code, code, `${name}=${value}: exit ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.ok(lines.some((l) => l.startsWith(`tprun: ${name}=${value}: not `)), `${name}=${value}: no line naming it: ${r.stderr}`);
  assert.ok(!/^\s+at /m.test(r.stderr), `${name}=${value}: a stack trace: ${r.stderr}`);
  assert.deepEqual(r.left ?? [], []);
}

test('the launcher refuses TPRUN_BUNDLE=no before any rank starts', async () => {
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--', 'sh', '-c', 'echo ran'], { env: { TPRUN_BUNDLE: 'no' } });
  refused(r, 'TPRUN_BUNDLE', 'no');
  assert.equal(r.stdout, '', 'a rank ran');
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
});

for (const [name, value] of [['TPRUN_MAP_SOURCE', 'no'], ['TPRUN_FAST_CRC', 'off'], ['TPRUN_SIMD', 'off'], ['TPRUN_INT4_FP16_DIRECT', 'yes']]) {
  test(`build refuses ${name}=${value} in one line and writes no output`, { timeout: 240_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tprun-knobs-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const out = join(dir, 'engine');
    const r = await runTprun(['build', '--model', MODEL, '--tp', '1', '--dtype', 'float16', '--out', out, '--quiet'], { env: { [name]: value } });
    refused(r, name, value);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.equal(existsSync(out), false, `${name}=${value}: the build wrote ${out}`);
  });
}

for (const [name, value] of [['TPRUN_COPY_ASYNC', 'no'], ['TPRUN_KERNEL_COPY', 'off'], ['TPRUN_MAP_COLUMNS', 'false']]) {
  test(`convert refuses ${name}=${value} in one line and writes no output`, { timeout: 240_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tprun-knobs-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const out = join(dir, 'ckpt');
    const r = await runTprun(['convert', '--model', MODEL, '--tp', '2', '--out', out], { env: { [name]: value } });
    // convert's ranks are its own processes: the line names the rank that read it.
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^tprun convert: rank \\d+: ${name}=${value}: not 0 \\(off\\) or 1 \\(on\\)$`, 'm'));
    assert.ok(!/^\s+at /m.test(r.stderr), r.stderr);
    assert.deepEqual(r.left ?? [], []);
    assert.equal(existsSync(out), false, `${name}=${value}: the convert wrote ${out}`);
  });
}

// Read inside the ranks (the world's shared-memory allReduce, src/rank/shm-allreduce.ts, and the world's
// bundle loader): a tprun command running as the ranks prints the refusal as its one line and exits 2,
// and the launcher ends the job with that code. The wasm one-exchange switch is read where the wasm plane
// is set up, which needs koffi.
const RANK_CMD = ['-n', '2', '--gpus', 'none', '--', process.execPath, CLI, 'bench', 'comm', '--sizes', '1024', '--rounds', '1', '--no-mpi', '--json'];
for (const [name, value, needsKoffi, extra] of /** @type {[string, string, boolean, Record<string, string>?][]} */ ([
  ['TPRUN_SHM_ONE_SHOT_BYTES', 'abc', false],
  ['TPRUN_SHM_ONE_SHOT_BYTES', '-1', false],
  ['TPRUN_SHM_ONE_SHOT_BYTES', '1.5', false],
  ['TPRUN_SHM_FUTEX_US', 'abc', false],
  ['TPRUN_SHM_SPIN_NS', 'abc', false],
  ['TPRUN_SHM_EARLY', 'yes', false],
  ['TPRUN_SHM_MMAP', 'off', true],
  ['TPRUN_SHM_WASM', 'no', true],
  ['TPRUN_SHM_WASM_ONESHOT', 'yes', true],
  ['TPRUN_TRANSPORT', 'tcp', false],
  ['TPRUN_BIND', 'yes', false],
  ['TPRUN_IMPLICIT_CLOSE', 'no', false],
  // The rings' and areas' geometry: '64k' turned the areas off without a word, 'abc' dropped the whole
  // shared-memory plane (a catch in links.ts took the error for "no room in /dev/shm").
  ['TPRUN_SHM_SLOT_BYTES', '64k', false],
  ['TPRUN_SHM_SLOTS', 'abc', false],
  ['TPRUN_SHM_SLOTS', '0', false],
  ['TPRUN_SHM_SLOT_BYTES', '32768', false],
  ['TPRUN_SHM_AR_STEP', '4096', false],
  ['TPRUN_TRANSPORT', 'unix', false],
  ['TPRUN_SHM_AR_STEP', '64k', false],
  ['TPRUN_SHM_AR_STEP', 'abc', false],
  // initWorld's own: they were a CommError, exit 1.
  ['TPRUN_COMM_TIMEOUT_MS', '10s', false],
  ['TPRUN_MAX_MESSAGE_BYTES', '4G', false],
  ['TPRUN_SPIN_US', '-1', false],
  // With the early set-up (TPRUN_SHM_EARLY=1) the memory switches are read when the world starts, before
  // the ranks meet: a bad one threw out of a deferred callback (a stack trace, exit 1).
  ['TPRUN_SHM_MMAP', 'off', true, { TPRUN_SHM_EARLY: '1' }],
  ['TPRUN_SHM_FUTEX_US', 'abc', true, { TPRUN_SHM_EARLY: '1' }],
])) {
  const more = extra ? ` (with ${Object.entries(extra).map(([k, v]) => `${k}=${v}`).join(' ')})` : '';
  test(`ranks of tprun -n 2 refuse ${name}=${value}${more} in one line and the job fails`, { timeout: 120_000, skip: needsKoffi && !koffi && 'koffi (optional) is not installed' }, async () => {
    refused(await runTprun(RANK_CMD, { env: { ...extra, [name]: value } }), name, value);
  });
}

test('a rank refuses TPRUN_BUNDLE=no where the world loads (its launcher had none)', { timeout: 120_000 }, async () => {
  // The launcher's own environment is clean; only the ranks' has the bad value, as under mpirun or srun.
  const at = RANK_CMD.indexOf('--') + 1;
  const r = await runTprun([...RANK_CMD.slice(0, at), 'env', 'TPRUN_BUNDLE=no', ...RANK_CMD.slice(at)]);
  refused(r, 'TPRUN_BUNDLE', 'no');
});

test('the knobs\' good values still run: TPRUN_SHM_ONE_SHOT_BYTES=0 (one-exchange path off) and the switches at 0', { timeout: 120_000 }, async () => {
  const r = await runTprun(RANK_CMD, { env: {
    TPRUN_SHM_ONE_SHOT_BYTES: '0', TPRUN_SHM_WASM_ONESHOT: '0', TPRUN_BUNDLE: '0', TPRUN_SHM_FUTEX_US: '0',
    TPRUN_SHM_SLOT_BYTES: '131072', TPRUN_SHM_SLOTS: '4', TPRUN_SHM_AR_STEP: '65536', TPRUN_COMM_TIMEOUT_MS: '60000', TPRUN_SPIN_US: '0', TPRUN_TRANSPORT: 'shm',
  } });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.left, []);
});
