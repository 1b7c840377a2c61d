// Each quantized linear kernel, run by onnxruntime, against the same arithmetic in plain JavaScript.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from '../dist/engine/ort.js'; // telemetry off, as tprun itself loads it
import { Graph } from '../dist/engine/graph.js';
import { WeightFile } from '../dist/engine/weight-file.js';
import { emitQuantLinear } from '../dist/quantization/onnx-linear.js';
import {
  quantizeWeights, dequantizeInt8PerChannel, quantizeInt8PerChannel, dequantizeInt4Grouped,
  quantizeInt4Grouped, dequantizeFp8, encodeE4M3, decodeE4M3,
} from 'tprun';
import { packInt4AlongN, unpackInt4AlongN } from '../dist/quantization/quantize-model.js';
import { LinearInputStats } from '../dist/quantization/calib-stats.js';
import { matmulNT } from '../dist/quantization/linalg.js';
import { toFloat32 } from '../dist/quantization/tensor-f32.js';
import { must } from './helpers/must.js';

function rng(seed) { let s = seed >>> 0; return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32; }; }
function randn(r) { return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()); }

// A row-parallel linear: it carries every companion a scheme has (SmoothQuant's smoother included).
const N = 48, K = 256, T = 5, PREFIX = 'transformer.layers.0.mlp.proj';
const r = rng(1);
const W = Float32Array.from({ length: N * K }, () => randn(r) * 0.05);
const X = Float32Array.from({ length: T * K }, (_, i) => randn(r) * (i % K === 3 ? 8 : 1));

async function quantized(algo, extra = {}) {
  // Only the fields quantizeWeights reads.
  const config = /** @type {import('tprun').PretrainedConfig} */ (/** @type {Partial<import('tprun').PretrainedConfig>} */ ({ num_hidden_layers: 1, dtype: 'float32' }));
  /** @type {import('tprun').Weights} */
  const weights = new Map([[`${PREFIX}.weight`, { dtype: 'float32', shape: [N, K], data: new Uint8Array(W.buffer) }]]);
  // quantizeWeights walks all five linears of a layer; give the others tiny stand-ins.
  for (const lin of ['attention.qkv', 'attention.dense', 'mlp.fc', 'mlp.gate']) {
    weights.set(`transformer.layers.0.${lin}.weight`, { dtype: 'float32', shape: [16, 128], data: new Uint8Array(16 * 128 * 4) });
  }
  for (const norm of ['input_layernorm', 'post_layernorm']) {
    weights.set(`transformer.layers.0.${norm}.weight`, { dtype: 'float32', shape: [128], data: new Uint8Array(Float32Array.from({ length: 128 }, () => 1).buffer) });
  }
  const stats = { linears: new Map(), kvAbsmax: new Map(), tokens: T };
  for (const [name, t] of weights) {
    if (t.shape.length !== 2) continue;
    const st = new LinearInputStats(t.shape[1]);
    st.add(name.startsWith(PREFIX) ? X : new Float32Array(t.shape[1]).fill(1), 1);
    stats.linears.set(name.replace(/\.weight$/, ''), st);
  }
  return quantizeWeights(config, weights, { algo, groupSize: 128, ...extra }, stats);
}

async function runLinear(weights, quant, opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-qlin-'));
  try {
    const wf = new WeightFile('weights.bin');
    const g = new Graph('qlin', 'float32', wf);
    const x = g.input('x', 'float32', ['t', K]);
    const y = emitQuantLinear(g, x, PREFIX, weights, quant, opts);
    g.output(y, 'float32', ['t', N]);
    await wf.write(join(dir, 'weights.bin'));
    const onnx = g.encode();
    // The attribute's name as an AttributeProto string in the serialized graph.
    assert.equal(Buffer.from(onnx).includes('accuracy_level'), Boolean(opts.int4_accuracy_level), 'accuracy_level attribute present exactly when asked for');
    writeFileSync(join(dir, 'model.onnx'), onnx);
    const s = await ort.InferenceSession.create(join(dir, 'model.onnx'), { executionProviders: ['cpu'], intraOpNumThreads: 1 });
    const out = await s.run({ x: new ort.Tensor('float32', X, [T, K]) });
    await s.release();
    return out[y].data;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function relErr(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / den);
}
const f32 = (t) => toFloat32(t);

test('W8A16: float weights in the checkpoint, quantized per channel at build: MatMulNBits 8-bit equals X · dequant(Q(W))', async () => {
  const q = await quantized('int8_wo');
  const t = q.weights;
  assert.equal(must(t.get(`${PREFIX}.weight`), 'weight').dtype, 'float32');
  const wq = dequantizeInt8PerChannel(quantizeInt8PerChannel(W, N, K), N, K);
  const y = await runLinear(t, q.quantization);
  assert.ok(relErr(y, matmulNT(X, T, wq, N, K)) < 1e-5);
  assert.ok(relErr(y, matmulNT(X, T, W, N, K)) < 0.01, 'and close to the float layer');
});

// build_config.int4_accuracy_level 4 (the CPU default): MatMulNBits quantizes the activations to int8 per
// block, as llama.cpp's Q8_0/Q4_0 dot products do. Its result must move (the int8 kernel ran, not the float
// one) and stay within what activation rounding costs.
for (const algo of ['int8_wo', 'int4_wo', 'int4_awq']) {
  test(`${algo} with accuracy_level 4: the int8-activation kernel, within activation rounding of accuracy_level 0`, async () => {
    const q = await quantized(algo);
    const y0 = await runLinear(q.weights, q.quantization);
    const y4 = await runLinear(q.weights, q.quantization, { int4_accuracy_level: 4 });
    const d = relErr(y4, y0);
    assert.ok(d > 1e-6, `accuracy_level 4 computed exactly what 0 did (${d}): the int8 kernel did not run`);
    // X's column 3 is 8× the others: it sets every 256-wide block's int8 step, so rounding costs ~2% here
    // (perplexity on a real model: docs/quantization.md).
    assert.ok(d < 0.05, `int8 activations moved the output by ${d}`);
  });
}

test('w4a8_awq keeps its FP8-then-float arithmetic: no accuracy_level even when the build asks for one', async () => {
  const q = await quantized('w4a8_awq');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-qlin-'));
  try {
    const g = new Graph('qlin', 'float32', new WeightFile('weights.bin'));
    emitQuantLinear(g, g.input('x', 'float32', ['t', K]), PREFIX, q.weights, q.quantization, { int4_accuracy_level: 4 });
    assert.equal(Buffer.from(g.encode()).includes('accuracy_level'), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** TensorRT-LLM's AWQ weight (int8 [N/2, K], nibbles along N) and group scales [N, K/g] → float W. */
function dequantAwq(t) {
  const q = unpackInt4AlongN(must(t.get(`${PREFIX}.weight`), 'weight').data, N, K);
  const sc = f32(t.get(`${PREFIX}.weights_scaling_factor`));
  return Float32Array.from(q, (v, i) => v * sc[Math.floor(i / K) * (K / 128) + Math.floor((i % K) / 128)]);
}

for (const algo of ['int4_wo', 'int4_awq', 'w4a8_awq']) {
  test(`${algo}: TensorRT-LLM's packed int4 repacked for MatMulNBits (group 128) equals (X ⊙ prequant) · dequant(W)`, async () => {
    const q = await quantized(algo);
    const t = q.weights;
    assert.deepEqual(must(t.get(`${PREFIX}.weight`), 'weight').shape, [N / 2, K]);
    const pre = f32(t.get(`${PREFIX}.prequant_scaling_factor`));
    let xs = X.map((v, i) => Math.fround(v * pre[i % K]));
    if (algo === 'int4_wo') assert.ok(pre.every((v) => v === 1), 'RTN: unit prequant');
    if (algo === 'w4a8_awq') {
      const as = f32(t.get(`${PREFIX}.activation_scaling_factor`))[0];
      xs = xs.map((v) => decodeE4M3(encodeE4M3(Math.fround(v / as))) * as);
    }
    const y = await runLinear(t, q.quantization);
    assert.ok(relErr(y, matmulNT(xs, T, dequantAwq(t), N, K)) < 1e-5, `${relErr(y, matmulNT(xs, T, dequantAwq(t), N, K))}`);
    assert.ok(relErr(y, matmulNT(X, T, W, N, K)) < 0.15);
  });
}

for (const act of ['per-token', 'per-tensor']) {
  test(`W8A8 SmoothQuant (${act} activations): MatMulInteger equals the integer reference exactly`, async () => {
    const q = await quantized('w8a8_sq', { sqActivations: act });
    const t = q.weights;
    const wi = new Int8Array(must(t.get(`${PREFIX}.weight`), 'weight').data.buffer);
    // Per token: TensorRT-LLM's plugin layout divides the input by smoother; per tensor (ModelOpt int8_sq)
    // multiplies it by prequant_scaling_factor.
    const ws = f32(t.get(`${PREFIX}.${act === 'per-token' ? 'per_channel_scale' : 'weights_scaling_factor'}`));
    const pre = act === 'per-token' ? null : f32(t.get(`${PREFIX}.prequant_scaling_factor`));
    const sm = act === 'per-token' ? f32(t.get(`${PREFIX}.smoother`)) : null;
    const as = act === 'per-token' ? 0 : f32(t.get(`${PREFIX}.activation_scaling_factor`))[0];
    const ref = new Float32Array(T * N);
    for (let i = 0; i < T; i++) {
      const xr = Float32Array.from({ length: K }, (_, c) => Math.fround(sm ? X[i * K + c] / sm[c] : X[i * K + c] * must(pre, 'prequant_scaling_factor')[c]));
      const s = act === 'per-token' ? Math.fround(Math.max(...xr.map(Math.abs)) / 127) : as;
      const xq = xr.map((v) => Math.max(-127, Math.min(127, Math.round(Math.fround(v / s)))));
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let c = 0; c < K; c++) acc += xq[c] * wi[n * K + c];
        ref[i * N + n] = Math.fround(Math.fround(acc * s) * ws[n]);
      }
    }
    const y = await runLinear(t, q.quantization);
    assert.ok(relErr(y, ref) < 1e-5, `vs integer reference ${relErr(y, ref)}`);
    assert.ok(relErr(y, matmulNT(X, T, W, N, K)) < 0.03, `vs float ${relErr(y, matmulNT(X, T, W, N, K))}`);
  });
}

test('FP8: float8e4m3fn weights with per-tensor scale, activations through FP8 with their static scale', async () => {
  const q = await quantized('fp8');
  const t = q.weights;
  assert.equal(must(t.get(`${PREFIX}.weight`), 'weight').dtype, 'float8_e4m3fn');
  assert.deepEqual(must(t.get(`${PREFIX}.weights_scaling_factor`), 'weights_scaling_factor').shape, [1]);
  const wq = dequantizeFp8(must(t.get(`${PREFIX}.weight`), 'weight').data, f32(t.get(`${PREFIX}.weights_scaling_factor`))[0]);
  const as = f32(t.get(`${PREFIX}.activation_scaling_factor`))[0];
  const xq = X.map((v) => decodeE4M3(encodeE4M3(Math.fround(v / as))) * as);
  const y = await runLinear(t, q.quantization);
  assert.ok(relErr(y, matmulNT(xq, T, wq, N, K)) < 1e-5, `${relErr(y, matmulNT(xq, T, wq, N, K))}`);
  assert.ok(relErr(y, matmulNT(X, T, W, N, K)) < 0.1);
});

test('AWQ nibble order is ModelOpt pack_int4_in_uint8\'s: byte = (q[2i] & 15) | (q[2i+1] << 4), signed', () => {
  const q = Int8Array.from([-8, 7, 1, -1, /* row 1 */ 3, -2, 0, 5]); // [N=2, K=4]
  const p = new Uint8Array(packInt4AlongN(q, 2, 4).buffer);
  assert.deepEqual([...p], [(-8 & 15) | (3 << 4), 7 | ((-2 & 15) << 4), 1 | (0 << 4), (-1 & 15) | (5 << 4)]);
  assert.deepEqual([...unpackInt4AlongN(p, 2, 4)], [...q]);
});

test('W4A16 (TensorRT-LLM per-channel int4, float weights in the checkpoint): quantized per row at build', async () => {
  const t = new Map([[`${PREFIX}.weight`, { dtype: 'float32', shape: [N, K], data: new Uint8Array(W.buffer) }]]);
  const y = await runLinear(t, { quant_algo: 'W4A16', kv_cache_quant_algo: null });
  const wq = dequantizeInt4Grouped(quantizeInt4Grouped(W, N, K, K), N, K, K);
  assert.ok(relErr(y, matmulNT(X, T, wq, N, K)) < 1e-5, `${relErr(y, matmulNT(X, T, wq, N, K))}`);
  assert.ok(relErr(y, matmulNT(X, T, W, N, K)) < 0.2);
});

// build_config.prefill_int8_gemm where the If cannot be emitted (GPU; float16 int4 MatMulNBits scales) is
// refused by build() first; a caller that reaches the emitter anyway gets an internal error, not a plain
// MatMulNBits in an engine whose config would say prefill_int8_gemm (the emitter used to skip it silently).
test('prefill_int8_gemm: an If on the CPU for per-channel weight-only linears; an internal error where it cannot apply', () => {
  /** @type {import('tprun').Weights} */
  const t = new Map([[`${PREFIX}.weight`, { dtype: 'float32', shape: [N, K], data: new Uint8Array(W.buffer) }]]);
  const emit = (algo, dtype, opts) => {
    const g = new Graph('qlin', dtype, new WeightFile('weights.bin'));
    emitQuantLinear(g, g.input('x', dtype, ['t', K]), PREFIX, t, { quant_algo: algo, kv_cache_quant_algo: null }, { prefill_int8_gemm: true, ...opts });
    return Buffer.from(g.encode());
  };
  for (const algo of ['W8A16', 'W4A16']) {
    const onnx = emit(algo, 'float32', { device: 'cpu' });
    assert.ok(onnx.includes('then_branch') && onnx.includes('MatMulInteger'), `${algo}: If over MatMulInteger`);
    assert.throws(() => emit(algo, 'float32', { device: 'gpu' }), /prefill_int8_gemm is on where it cannot apply/, `${algo} gpu`);
  }
  assert.ok(emit('W8A16', 'float16', { device: 'cpu', int4_matmul_dtype: 'auto' }).includes('then_branch'), 'int8 keeps float32 scales');
  assert.throws(() => emit('W4A16', 'float16', { device: 'cpu', int4_matmul_dtype: 'auto' }), /prefill_int8_gemm is on where it cannot apply/);
});
