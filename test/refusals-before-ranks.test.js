// `build --checkpoint` of a checkpoint that cannot be built is refused before any rank starts: one line
// naming the file and the tensor or dimension at fault, exit 2, no stack, no output. These were found by
// each rank (its load, or its graph builder) after the ranks had started: a line without the rank, then
// the launcher's own line for the rank that exited. A second line on stderr is what a started rank adds.
// The same for generate's engine files (present, of their recorded sizes); bad input only a rank can meet
// (its own file's checksum) is named with that rank.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tprun } from './helpers/engine.js';
import { writeTinyLlama } from './helpers/tiny-model.js';
import { readSafetensors, writeSafetensors } from '../dist/checkpoint/index.js';

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-ckpt-refusals-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

/** A tp=2 checkpoint of a one-layer model of `shape`, converted by tprun (with `quant`, if any). */
async function checkpoint(name, shape, quant) {
  const model = join(dir, `${name}-hf`);
  mkdirSync(model);
  writeTinyLlama(model, shape);
  const ck = join(dir, name);
  const r = await tprun(['convert', '--model', model, '--tp', '2', ...(quant ? ['--quant', quant] : []), '--out', ck]);
  assert.equal(r.code, 0, r.stderr);
  return ck;
}

/** The build is refused with exactly `line`, exit 2, no stack trace, no rank started, nothing written. */
async function refused(args, line) {
  const out = join(dir, 'engine');
  const r = await tprun(['build', ...args, '--out', out]);
  assert.equal(r.code, 2, r.stderr);
  assert.doesNotMatch(r.stderr, /^ {4}at /m, 'a stack trace');
  assert.equal(r.stderr, `${line}\n`, 'one line, and no rank started (a rank that fails adds the launcher\'s line)');
  assert.ok(!existsSync(out), 'no partial output');
  assert.deepEqual(r.left, []);
}

test('a W8A16 checkpoint whose per-rank K MatMulNBits cannot block: refused naming its config.json and the linear', { timeout: 240_000 }, async () => {
  const h72 = await checkpoint('w8-h72', { H: 72, I: 128 }, 'int8_wo');
  await refused(['--checkpoint', h72], `tprun: ${h72}/config.json: quant_algo W8A16: attention.qkv has 72 input features per rank at tp=2, not a multiple of 16 (onnxruntime's MatMulNBits blocks); build from the unquantized model`);
  const i136 = await checkpoint('w8-i136', { H: 64, I: 136 }, 'int8_wo');
  await refused(['--checkpoint', i136], `tprun: ${i136}/config.json: quant_algo W8A16: mlp.proj has 68 input features per rank at tp=2, not a multiple of 16 (onnxruntime's MatMulNBits blocks); build from the unquantized model`);
});

test('a checkpoint missing a rank file, with a rank\'s tensor of the wrong shape, or a config its files or tp_size disagree with: refused naming the file and tensor', { timeout: 240_000 }, async () => {
  const ck = await checkpoint('f32', { H: 64, I: 128, nkv: 2 });
  const missing = join(dir, 'missing');
  cpSync(ck, missing, { recursive: true });
  rmSync(join(missing, 'rank1.safetensors'));
  await refused(['--checkpoint', missing], `tprun: ${missing}/rank1.safetensors: cannot open (ENOENT)`);

  const shape = join(dir, 'shape');
  cpSync(ck, shape, { recursive: true });
  const w = readSafetensors(join(ck, 'rank1.safetensors'));
  const name = 'transformer.layers.0.mlp.proj.weight';
  const t = w.get(name);
  assert.ok(t);
  assert.deepEqual(t.shape, [64, 64]);
  w.set(name, { dtype: t.dtype, shape: [64, 32], data: t.data.subarray(0, t.data.length / 2) });
  writeSafetensors(join(shape, 'rank1.safetensors'), w);
  await refused(['--checkpoint', shape], `tprun: ${shape}/rank1.safetensors: tensor ${name} has shape [64, 32], expected [64, 64] for rank 1 of tp=2`);

  // A config.json that disagrees with its rank files, or whose heads its tp_size does not divide.
  const edited = (name, edit) => {
    const to = join(dir, name);
    cpSync(ck, to, { recursive: true });
    const c = JSON.parse(readFileSync(join(to, 'config.json'), 'utf8'));
    writeFileSync(join(to, 'config.json'), JSON.stringify(edit(c)));
    return to;
  };
  const heads = edited('heads', (c) => ({ ...c, num_attention_heads: 3, num_key_value_heads: 3 }));
  await refused(['--checkpoint', heads], `tprun: ${heads}/config.json: --tp 2 does not divide num_attention_heads=3`);
  const vocab = edited('vocab', (c) => ({ ...c, vocab_size: 63 }));
  await refused(['--checkpoint', vocab], `tprun: ${vocab}/rank0.safetensors: tensor transformer.vocab_embedding.weight has shape [64, 64], expected [63, 64] for rank 0 of tp=2`);

  // The intact checkpoint builds.
  const out = join(dir, 'built');
  const r = await tprun(['build', '--checkpoint', ck, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(out, 'rank1')));
});

test('what the engine cannot take: --max-seq-len past the model\'s positions, TPRUN_BUILD_WRITER spelt wrong, a CPU head size', { timeout: 240_000 }, async () => {
  const ck = await checkpoint('f32b', { H: 64, I: 128, nkv: 2 });
  await refused(['--checkpoint', ck, '--max-seq-len', '2048'], 'tprun: --max-seq-len 2048 exceeds the model\'s 1024 positions (it has no rope scaling)');
  // --model meets the same check before its ranks start.
  await refused(['--model', `${ck}-hf`, '--tp', '2', '--max-seq-len', '2048'], 'tprun: --max-seq-len 2048 exceeds the model\'s 1024 positions (it has no rope scaling)');
  const writer = await tprun(['build', '--checkpoint', ck, '--out', join(dir, 'engine')], { env: { TPRUN_BUILD_WRITER: 'fast' } });
  assert.equal(writer.code, 2, writer.stderr);
  assert.equal(writer.stderr, 'tprun: TPRUN_BUILD_WRITER=fast: must be streaming or auto\n');
  const hs24 = await checkpoint('hs24', { H: 96, I: 128, nh: 4, nkv: 2, hd: 24 });
  await refused(['--checkpoint', hs24], `tprun: --checkpoint ${hs24}: head size 24 (hidden 96 / 4 heads): onnxruntime's GroupQueryAttention with rotary caches takes multiples of 16, so no CPU engine can run it; build with --device gpu for tprun's WGSL kernels`);
});

test('generate of an engine missing a rank file\'s bytes is refused before ranks start; a checksum only that rank meets is named by the rank', { timeout: 240_000 }, async () => {
  const ck = await checkpoint('f32c', { H: 64, I: 128, nkv: 2 });
  const engine = join(dir, 'engine-ok');
  const b = await tprun(['build', '--checkpoint', ck, '--out', engine]);
  assert.equal(b.code, 0, b.stderr);
  const gen = ['generate', '--engine', engine, '--input-ids', '0,1,2', '--max-new-tokens', '2'];
  const w = join(engine, 'rank1', 'weights.bin');
  const size = statSync(w).size;
  const saved = readFileSync(w);
  truncateSync(w, size - 100);
  let r = await tprun(gen);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr, `tprun: ${w}: ${size - 100} bytes, expected ${size} (damaged engine)\n`, 'one line, no rank started');
  assert.equal(r.stdout, '');

  // A flipped byte is found by the checksum that rank 1 computes as it opens its files.
  const bad = Buffer.from(saved);
  bad[size >> 1] ^= 0xff;
  writeFileSync(w, bad);
  r = await tprun(gen);
  assert.equal(r.code, 2, r.stderr);
  assert.doesNotMatch(r.stderr, /^ {4}at /m, 'a stack trace');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.filter((l) => l === `tprun: rank 1: ${w}: checksum mismatch (damaged engine)`).length, 1, r.stderr);
  assert.ok(lines.every((l) => l.startsWith('tprun: ')), r.stderr);
  assert.equal(r.stdout, '', 'no partial output');
  assert.deepEqual(r.left, []);
});
