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
import { spawnSync } from 'node:child_process';
import { CLI, runTprun } from './helpers/procs.js';
import { jsonObject, onOff, oneOf, wholeNumber } from '../dist/util/env.js';

const MODEL = fileURLToPath(new URL('../models/brown-llama-a', import.meta.url));
let koffi = true;
try { await import('koffi'); } catch { koffi = false; }

test('onOff takes unset, empty, 0 and 1 and refuses anything else naming the variable; wholeNumber takes digits only', () => {
  assert.equal(onOff('X', {}), true);
  assert.equal(onOff('X', { X: '' }), true);
  assert.equal(onOff('X', { X: '1' }), true);
  assert.equal(onOff('X', { X: '0' }), false);
  // A switch that is off unless asked for (TPRUN_ORT_SPIN): unset or empty is the default.
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

// TPRUN_WEBGPU_EP_OPTIONS went through a bare JSON.parse, on the GPU only: a SyntaxError's text without the
// variable's name (exit 1), and on the CPU no word at all. Now: refused in one line naming it, exit 2, on
// every device, before the engine commands start their ranks (and by EngineRunner.load, for library callers).
test('jsonObject takes a JSON object and refuses other JSON and non-JSON naming the variable', () => {
  assert.equal(jsonObject('J', {}), undefined);
  assert.equal(jsonObject('J', { J: '' }), undefined);
  assert.deepEqual(jsonObject('J', { J: '{"validationMode":"disabled"}' }), { validationMode: 'disabled' });
  assert.throws(() => jsonObject('J', { J: '{bad' }), (/** @type {any} */ e) => e.name === 'InputError' && e.exitCode === 2 && /^J=\{bad: not JSON \(/.test(e.message));
  for (const v of ['[1,2]', 'null', '"x"', '3', 'true']) {
    assert.throws(() => jsonObject('J', { J: v }), (/** @type {any} */ e) => e.name === 'InputError' && e.message.startsWith(`J=${v}: not a JSON object`), v);
  }
});

test('generate and perplexity refuse a bad TPRUN_WEBGPU_EP_OPTIONS in one line (exit 2) on any device, also as the ranks of tprun -n 2', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-knobs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const engine = join(dir, 'engine');
  const b = await runTprun(['build', '--model', MODEL, '--tp', '2', '--out', engine, '--max-input-len', '8', '--max-seq-len', '64', '--quiet']);
  assert.equal(b.code, 0, b.stderr);
  const gen = ['generate', '--engine', engine, '--input-ids', '0,1,2', '--max-new-tokens', '2', '--device', 'cpu', '--quiet'];
  for (const value of ['{bad', '[1,2]', 'null']) {
    const name = 'TPRUN_WEBGPU_EP_OPTIONS';
    let r = await runTprun(gen, { env: { [name]: value } });
    refused(r, name, value);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    r = await runTprun(['perplexity', '--engine', engine, '--window', '8', '--max-tokens', '16', '--quiet'], { env: { [name]: value } });
    refused(r, name, value);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    refused(await runTprun(['-n', '2', '--gpus', 'none', '--', process.execPath, CLI, ...gen], { env: { [name]: value } }), name, value);
  }
  // A good value is taken (and, on the CPU, not used).
  const ok = await runTprun(gen, { env: { TPRUN_WEBGPU_EP_OPTIONS: '{"validationMode":"disabled"}' } });
  assert.equal(ok.code, 0, ok.stderr);
});

test('EngineRunner.load refuses a bad TPRUN_WEBGPU_EP_OPTIONS for a library caller, on the CPU too', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-knobs-'));
  const saved = process.env.TPRUN_WEBGPU_EP_OPTIONS;
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    if (saved === undefined) delete process.env.TPRUN_WEBGPU_EP_OPTIONS; else process.env.TPRUN_WEBGPU_EP_OPTIONS = saved;
  });
  const out = join(dir, 'engine');
  const b = await runTprun(['build', '--model', MODEL, '--tp', '1', '--out', out, '--max-input-len', '8', '--max-seq-len', '64', '--quiet']);
  assert.equal(b.code, 0, b.stderr);
  const { Engine } = await import('../dist/engine/engine.js');
  const { EngineRunner } = await import('../dist/engine/runtime.js');
  const { initWorld } = await import('../dist/rank/world.js');
  const world = await initWorld({ env: {} });
  process.env.TPRUN_WEBGPU_EP_OPTIONS = '[]';
  await assert.rejects(EngineRunner.load(await Engine.fromDir(out, 0, { worldSize: 1 }), world, { device: 'cpu' }),
    (/** @type {any} */ e) => e.name === 'InputError' && e.message.startsWith('TPRUN_WEBGPU_EP_OPTIONS=[]: not a JSON object'));
  await world.close();
});

// `tprun bench generate` and `tprun convert --quant` read TPRUN_WEBGPU_EP_OPTIONS only where an engine was
// loaded (after building engines, after reading and calibrating the model): refused late, from inside a
// child or a rank. Now refused first, in one line, exit 2, with nothing written. A "name" key used to
// replace the provider's name ({"name":"cpu"} ran the CPU provider under the GPU's settings): refused.
test('bench generate and convert --quant refuse a bad TPRUN_WEBGPU_EP_OPTIONS first, in one line; a "name" key is refused', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-knobs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const name = 'TPRUN_WEBGPU_EP_OPTIONS';
  const once = (r, pattern) => {
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, pattern);
  };
  const bench = ['bench', 'generate', '--model', MODEL, '--tp', '1', '--max-seq-len', '32', '--prompt-len', '4', '--new-tokens', '2', '--reps', '1', '--device', 'cpu'];
  once(await runTprun(bench, { env: { [name]: '[1,2]' } }), /^tprun: TPRUN_WEBGPU_EP_OPTIONS=\[1,2\]: not a JSON object/);
  once(await runTprun(bench, { env: { [name]: '{"name":"cpu"}' } }), /TPRUN_WEBGPU_EP_OPTIONS=\{"name":"cpu"\}: has a "name" key/);
  const out = join(dir, 'ckpt');
  once(await runTprun(['convert', '--model', MODEL, '--tp', '1', '--quant', 'w8a8_sq', '--calib-samples', '2', '--out', out], { env: { [name]: '{bad' } }),
    /^tprun convert: TPRUN_WEBGPU_EP_OPTIONS=\{bad: not JSON/);
  assert.ok(!existsSync(out));
});

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
  ['TPRUN_SHM_ONE_SHOT_BYTES', '32k', false, { TPRUN_SHM_EARLY: '1' }],
])) {
  const more = extra ? ` (with ${Object.entries(extra).map(([k, v]) => `${k}=${v}`).join(' ')})` : '';
  test(`ranks of tprun -n 2 refuse ${name}=${value}${more} in one line and the job fails`, { timeout: 120_000, skip: needsKoffi && !koffi && 'koffi (optional) is not installed' }, async () => {
    refused(await runTprun(RANK_CMD, { env: { ...extra, [name]: value } }), name, value);
  });
}

// The shared-memory knobs are read where the world's areas start (src/rank/shm-allreduce.ts memorySwitches),
// TPRUN_SHM_ONE_SHOT_BYTES too: it was read when the world's module loaded, so a bad value failed worlds
// that set up no areas at all (a world of one, TPRUN_TRANSPORT=zmq), where every other such knob is not read.
test('TPRUN_SHM_ONE_SHOT_BYTES is read where the areas start, as the other shared-memory knobs: a world without areas runs', { timeout: 120_000 }, async () => {
  const { spawnRanks } = await import('./helpers/spawn-ranks.js');
  const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));
  const one = spawnSync(process.execPath, ['--input-type=module', '-e',
    `const { initWorld } = await import(${JSON.stringify(new URL('../dist/rank/world.js', import.meta.url).href)}); const w = await initWorld(); await w.barrier(); console.log(w.size);`],
  { env: { ...process.env, TPRUN_SHM_ONE_SHOT_BYTES: 'abc', TPRUN_SHM_MMAP: 'off' }, encoding: 'utf8' });
  assert.equal(one.status, 0, one.stderr);
  assert.equal(one.stdout.trim(), '1');
  const res = await spawnRanks(2, [APP, 'hello'], { env: { TPRUN_TRANSPORT: 'zmq', TPRUN_SHM_ONE_SHOT_BYTES: 'abc', TPRUN_SHM_MMAP: 'off' }, timeoutMs: 60_000 });
  for (const r of res) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).sum, 3);
  }
});

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
