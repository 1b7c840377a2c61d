// W8A16 (and W4A16) checkpoints hold float weights that TensorRT-LLM quantizes at load, per rank. tprun
// quantizes them on rank 0 only, per shard, and sends each rank its int8 weights: for `build --checkpoint`
// of such a checkpoint and for `build --model --quant int8_wo`. Every per-channel quantization is a
// `quant.weight_only` trace span; the merged trace (pid = rank) shows all of them on rank 0, one per
// linear of every rank's shard, and rank 1 opens no rank file of the checkpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { readSafetensors, writeSafetensors } from '../dist/checkpoint/safetensors.js';
import { must } from './helpers/must.js';

const MODEL = resolve('models/brown-llama-a');
const TRACE_OPEN = resolve('test/helpers/trace-open.mjs');
const LINEARS_PER_RANK = 6 * 5; // brown-llama-a: 6 layers × qkv, dense, fc, gate, proj

function tprun(args, env = {}) {
  return execa(process.execPath, ['dist/cli.js', ...args], { reject: false, all: true, timeout: 300_000, env });
}

function weightOnlySpans(trace) {
  const spans = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e) => e.ph === 'X' && e.name === 'quant.weight_only');
  const byPid = {};
  for (const s of spans) byPid[s.pid] = (byPid[s.pid] ?? 0) + 1;
  return { byPid, tensors: spans.map((s) => s.args.tensor) };
}

test('build of int8_wo at tp 2: only rank 0 runs the weight-only quantizer, from a checkpoint and from a model', { timeout: 900_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wo-rank0-'));
  try {
    const ckpt = join(dir, 'ckpt');
    let r = await tprun(['convert', '--model', MODEL, '--tp', '2', '--quant', 'int8_wo', '--out', ckpt]);
    assert.equal(r.exitCode, 0, r.all);
    assert.equal(JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8')).quantization.quant_algo, 'W8A16');

    const t1 = join(dir, 'ckpt.trace.json');
    r = await tprun(['build', '--checkpoint', ckpt, '--out', join(dir, 'e-ckpt'), '--max-seq-len', '128', '--max-input-len', '64', '-q', '--trace', t1],
      { TRACE_OPEN_DIR: dir, NODE_OPTIONS: `--import=${TRACE_OPEN}` });
    assert.equal(r.exitCode, 0, r.all);
    const a = weightOnlySpans(t1);
    assert.deepEqual(a.byPid, { 0: 2 * LINEARS_PER_RANK }, 'rank 0 quantized both ranks\' linears, rank 1 none');
    assert.equal(new Set(a.tensors).size, LINEARS_PER_RANK);
    const opened1 = readFileSync(join(dir, 'opened.1.log'), 'utf8').split('\n').filter((p) => p.startsWith(ckpt) && p.endsWith('.safetensors'));
    assert.deepEqual(opened1, [], 'rank 1 read no rank file of the checkpoint');

    const t2 = join(dir, 'model.trace.json');
    r = await tprun(['build', '--model', MODEL, '--tp', '2', '--quant', 'int8_wo', '--out', join(dir, 'e-model'), '--max-seq-len', '128', '--max-input-len', '64', '-q', '--trace', t2]);
    assert.equal(r.exitCode, 0, r.all);
    assert.deepEqual(weightOnlySpans(t2).byPid, { 0: 2 * LINEARS_PER_RANK });

    // The same float shards quantized the same way: the two engines hold the same weights.
    for (const rank of [0, 1]) {
      const w = (e) => readFileSync(join(dir, e, `rank${rank}`, 'weights.bin'));
      assert.ok(w('e-ckpt').equals(w('e-model')), `rank ${rank} weights.bin differs between the two builds`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('build --checkpoint of a W8A16 checkpoint holding int8 weights at tp 2: refused before any rank starts (exit 2, one line naming the tensor), no engine', { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wo-int8-'));
  try {
    const ckpt = join(dir, 'ckpt');
    let r = await tprun(['convert', '--model', MODEL, '--tp', '2', '--quant', 'int8_wo', '--out', ckpt]);
    assert.equal(r.exitCode, 0, r.all);
    const name = 'transformer.layers.0.attention.qkv.weight';
    for (const rank of [0, 1]) {
      const f = join(ckpt, `rank${rank}.safetensors`);
      const w = readSafetensors(f);
      const [n, k] = must(w.get(name), name).shape;
      // TensorRT-LLM's kernel layout: int8 (K, N), interleaved for one GPU architecture.
      w.set(name, { dtype: 'int8', shape: [k, n], data: new Uint8Array(n * k) });
      writeSafetensors(f, w);
    }
    const eng = join(dir, 'engine');
    r = await tprun(['build', '--checkpoint', ckpt, '--out', eng, '-q']);
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.all, /attention\.qkv\.weight is int8\[\d+,\d+\], W8A16 wants bfloat16/);
    assert.equal(r.all.trim().split('\n').length, 1, r.all);
    assert.ok(!existsSync(eng), 'no engine directory left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
