// Clear one-line errors: wrong number of ranks, a prompt over max-input-len, damaged engine files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, openSync, closeSync, writeSync, rmSync, truncateSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, tprun } from './helpers/engine.js';
import { CLI } from './helpers/procs.js';

let dir;
let engine;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-engine-err-'));
  engine = join(dir, 'engine');
  const r = await tprun(['build', '--model', MODEL, '--tp', '2', '--out', engine, '--max-input-len', '8', '--max-seq-len', '64']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const oneLine = (s) => s.trim().split('\n').filter((l) => l.startsWith('tprun')).length >= 1;

test('an engine run with the wrong number of ranks fails naming both numbers', async () => {
  const r = await tprun(['-n', '1', '--', process.execPath, CLI, 'generate', '--engine', engine, '--input-ids', '0,1,2']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /2\b.*\b1\b|1\b.*\b2\b/);
  assert.match(r.stderr, /rank/);
  assert.deepEqual(r.left, []);
});

test('a prompt longer than max-input-len is refused with exit code 2 before any rank starts', async () => {
  const r = await tprun(['generate', '--engine', engine, '--prompt', REF.prompts[0].text]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /prompt 0 has 9 tokens, more than the engine's max_input_len 8/);
  assert.ok(oneLine(r.stderr));
});

test('a damaged engine file is named (truncated weights, flipped byte, missing config)', async () => {
  const bad = join(dir, 'bad');
  cpSync(engine, bad, { recursive: true });
  const w = join(bad, 'rank1', 'weights.bin');
  truncateSync(w, statSync(w).size - 100);
  let r = await tprun(['generate', '--engine', bad, '--input-ids', '0,1,2', '--max-new-tokens', '2']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /rank1\/weights\.bin: \d+ bytes, expected \d+ \(damaged engine\)/);
  assert.deepEqual(r.left, []);

  cpSync(join(engine, 'rank1', 'weights.bin'), w);
  const fd = openSync(join(bad, 'rank0', 'seg3.onnx'), 'r+');
  writeSync(fd, Buffer.from([0xff]), 0, 1, 20);
  closeSync(fd);
  r = await tprun(['perplexity', '--engine', bad, '--max-tokens', '16', '--window', '8']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /rank0\/seg3\.onnx: checksum mismatch \(damaged engine\)/);

  rmSync(join(bad, 'config.json'));
  r = await tprun(['generate', '--engine', bad, '--input-ids', '0,1,2']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /config\.json: not an engine directory/);
});

test('bad build input: missing model directory, conflicting options', async () => {
  let r = await tprun(['build', '--model', join(dir, 'nope'), '--out', join(dir, 'x')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /nope/);
  r = await tprun(['build', '--model', MODEL, '--out', join(dir, 'x'), '--max-input-len', '600', '--max-seq-len', '512']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--max-input-len 600 exceeds --max-seq-len 512/);
});

test('a head size onnxruntime\'s GroupQueryAttention cannot run (not a multiple of 16) is refused at build for the CPU, in one line', async () => {
  const { mkdtempSync, rmSync, existsSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { writeTinyLlama } = await import('./helpers/tiny-model.js');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-hs24-'));
  try {
    // One layer, hidden 96, 4 heads of 24, 2 KV heads.
    writeTinyLlama(dir, { H: 96, I: 128, nh: 4, nkv: 2, hd: 24 });
    const out = join(dir, 'engine');
    const r = await tprun(['build', '--model', dir, '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim(), /^tprun: --model .*: head size 24 \(hidden 96 \/ 4 heads\): onnxruntime's GroupQueryAttention with rotary caches takes multiples of 16, so no CPU engine can run it; build with --device gpu for tprun's WGSL kernels$/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.ok(!existsSync(out), 'no partial output');
    // For the GPU it builds (the WGSL kernels take even head sizes).
    const g = await tprun(['build', '--model', dir, '--out', out, '--device', 'gpu']);
    assert.equal(g.code, 0, g.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
