// Quantized linears in the engine graph (called by src/engine/linear.ts's emitLinear for every linear
// whose checkpoint tensors are quantized). Input [.., K] in the graph dtype, output [.., N]. The tensors
// arrive in TensorRT-LLM's checkpoint layout (src/sharding/tllm-layout.ts) and are repacked here,
// at build time, into what onnxruntime's kernels read:
//
//   W8A16 / W4A16              float weights (TensorRT-LLM's portable form) quantized per output channel
//                              by rank 0 (weight-only.ts, as TensorRT-LLM's loader does per shard) and
//                              received as int8 + per_channel_scale, then com.microsoft MatMulNBits
//                              (bits 8 | 4; the row scale repeated over blocks).
//   W4A16_AWQ / W4A8_AWQ       int4 packed along N (TensorRT-LLM) → MatMulNBits' [N, K/2] (+8 offset),
//                              group scales as stored; the prequant factor is a Mul on the input. W4A8's
//                              activations go through FP8 with their static scale (fake-quantized: no FP8
//                              GEMM in ORT's CPU/WebGPU EPs), the weights stay int4 (q · scale).
//   W8A8 SmoothQuant           per token: x ⊘ smoother → int8 per token (dynamic) → MatMulInteger (int8 ×
//                              int8 → int32) → × x_scale × per_channel_scale. Per tensor (ModelOpt int8_sq):
//                              x ⊙ prequant → int8 with activation_scaling_factor → MatMulInteger → ×
//                              act × weights_scaling_factor. Integer arithmetic on CPU.
//   FP8                        activations quantize-dequantized through float8e4m3fn with their calibrated
//                              scale, weights DequantizeLinear'd from float8 storage, then a float MatMul:
//                              stored in 8 bits, computed in float.

import type { Tensor, Weights } from '../core/tensor.js';
import type { Graph } from '../engine/graph.js';
import type { QuantLinearOptions } from '../engine/linear.js';
import type { QuantConfig } from '../core/config.js';
import { unpackInt4AlongN } from './quantize-model.js';
import { fromFloat32 } from '../engine/dtype.js';
import { toFloat32 } from './tensor-f32.js';
import { quantizeWeightOnlyLinear } from './weight-only.js';
import { quantizeInt4Grouped, quantizeInt8Blocks } from './weights.js';
import { int4Direct, prefillGemmApplies } from '../engine/prefill-gemm-rule.js';
import { lmHeadBlockFor } from '../engine/build-config.js';

const MS = 'com.microsoft';

function need(weights: Weights, name: string): Tensor {
  const t = weights.get(name);
  if (!t) throw new Error(`missing tensor ${name} (quantized checkpoint incomplete)`);
  return t;
}

function f32Scalar(t: Tensor, name: string): number {
  if (t.shape.reduce((a, b) => a * b, 1) !== 1) throw new Error(`${name}: expected one value, got shape [${t.shape}]`);
  return toFloat32(t, name)[0];
}

/** Transposes an [N, K] matrix of 1-byte elements to [K, N]. */
function transposeBytes(src: Uint8Array, n: number, k: number): Uint8Array {
  const out = new Uint8Array(n * k);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) out[c * n + r] = src[r * k + c];
  return out;
}

function floatConst(g: Graph, hint: string, values: Float32Array | number[], dims: number[]): string {
  const a = Float32Array.from(values);
  return g.constant(hint, 'float32', dims, new Uint8Array(a.buffer));
}

export function emitQuantLinear(g: Graph, input: string, prefix: string, weights: Weights, quant: QuantConfig, opts: QuantLinearOptions = {}): string {
  const w = need(weights, `${prefix}.weight`);
  if (w.shape.length !== 2) throw new Error(`${prefix}.weight: expected 2 dimensions, got [${w.shape}]`);
  const algo = quant.quant_algo ?? '';
  // int4 weight-only in a float16 engine: MatMulNBits takes float16 activations and scales directly, so
  // no Cast pair around every linear. Profiled on the H200 (docs/gpu.md) those Casts were 199 of the 425
  // nodes of a TinyLlama-shape int4 decode step on WebGPU: 4.9 ms of its CPU time, 1.5 ms of its GPU time.
  // Opt-in (build_config.int4_matmul_dtype 'auto'): the float32 kernel decodes faster there (docs/gpu.md).
  const rule = { device: opts.device, dtype: g.dtype, int4_matmul_dtype: opts.int4_matmul_dtype };
  const direct = int4Direct(rule, algo);
  const fdt = direct ? 'float16' : 'float32';
  // build_config.int4_accuracy_level (build-config.ts says why 4 on the CPU); 0 leaves the attribute out.
  const acc = opts.int4_accuracy_level ?? 0;
  // Otherwise quantized arithmetic runs in float32 whatever the engine dtype; fp16 engines cast around it.
  let x = g.dtype === 'float32' || direct ? input : g.op('Cast', [input], { to: 1 });
  const pre = weights.get(`${prefix}.prequant_scaling_factor`);
  // A factor of exactly 1 (int4_wo's W4A16_AWQ layout) multiplies by nothing: one node less per linear.
  if (pre && !toFloat32(pre).every((v) => v === 1)) x = g.op('Mul', [x, g.weight(`${prefix}.prequant_scaling_factor`, fromFloat32(toFloat32(pre), [pre.shape.reduce((a, b) => a * b, 1)], fdt))]);
  let y: string;
  switch (algo) {
    case 'W8A16':
    case 'W4A16': {
      const prefill = opts.prefill_int8_gemm !== true ? 'off' : prefillGemmApplies(rule, algo) ? 'on' : 'inapplicable';
      y = emitWeightOnlyPerChannel(g, x, prefix, w, weights, algo === 'W8A16' ? 8 : 4, fdt, acc, prefill);
      break;
    }
    case 'W4A16_AWQ':
    case 'W4A8_AWQ':
      if (algo === 'W4A8_AWQ') x = fp8Activations(g, x, prefix, weights);
      // W4A8's activations already went through FP8 as TensorRT-LLM's kernel takes them; int8 blocks on top
      // would be a second rounding that kernel does not make.
      y = emitAwqInt4(g, x, prefix, w, weights, fdt, algo === 'W4A8_AWQ' ? 0 : acc);
      break;
    case 'W8A8_SQ_PER_CHANNEL':
    case 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN': y = emitW8A8(g, x, prefix, w, weights, algo); break;
    case 'FP8': y = emitFp8(g, x, prefix, w, weights); break;
    default: throw new Error(`${prefix}: no quantized kernel for quant_algo ${algo || 'null'} (weight ${w.dtype})`);
  }
  return g.dtype === 'float32' || direct ? y : g.op('Cast', [y], { to: 10 });
}

/**
 * A float weight [N, K] quantized here, at build, into MatMulNBits blocks of `blockSize` along K
 * (../engine/build-config.ts lmHeadBlockFor: the largest power of two ≤ it dividing K), symmetric, one float32 scale per block: 8 bits as ggml's Q8_0
 * (quantize_row_q8_0_ref: amax / 127), 4 bits as the RTN int4 of weights.ts (amax / 7). Used for the
 * lm_head (build_config.lm_head_quant); undefined where K is not a multiple of 16. Returns the output
 * and its dtype.
 */
export function emitBlockQuantizedFloat(g: Graph, input: string, prefix: string, w: Tensor, bits: 8 | 4, blockSize: number, acc: number, direct = false): { value: string; dtype: 'float32' | 'float16' } | undefined {
  if (w.shape.length !== 2) throw new Error(`${prefix}.weight: expected 2 dimensions, got [${w.shape}]`);
  const [n, k] = w.shape;
  // The block the engine's config records (engine.ts build), so that the graph and the config agree.
  const bs = lmHeadBlockFor(k, blockSize);
  if (bs === undefined) return undefined;
  const wf = toFloat32(w, `${prefix}.weight`);
  let data: Uint8Array;
  let scale: Float32Array;
  if (bits === 8) ({ q: data, scale } = quantizeInt8Blocks(wf, n, k, bs));
  else ({ packed: data, scale } = quantizeInt4Grouped(wf, n, k, bs));
  // As emitQuantLinear: float32 activations unless a float16 engine asked for float16 MatMulNBits
  // (int4_matmul_dtype 'auto'). The output stays in that dtype: the logits are float32 anyway.
  const fdt = direct && g.dtype === 'float16' ? 'float16' : 'float32';
  const x = g.dtype === fdt ? input : g.op('Cast', [input], { to: 1 });
  const b = g.weight(`${prefix}.weight`, { dtype: 'uint8', shape: [n, k / bs, (bs * bits) / 8], data });
  const s = g.weight(`${prefix}.scales`, fromFloat32(scale, [n * (k / bs)], fdt));
  return { value: g.op('MatMulNBits', [x, b, s], nbitsAttrs(k, n, bits, bs, acc), MS), dtype: fdt };
}

/** Largest power-of-two block (16..256) dividing K, for MatMulNBits with one scale per row. */
function rowBlock(prefix: string, k: number): number {
  let bs = 16;
  while (bs < 256 && k % (bs * 2) === 0) bs *= 2;
  if (k % bs) throw new Error(`${prefix}: K=${k} is not a multiple of 16 (MatMulNBits blocks)`);
  return bs;
}

/** MatMulNBits' attributes; accuracy_level only when asked for, so GPU engines keep the graph they had. */
function nbitsAttrs(k: number, n: number, bits: number, bs: number, acc: number): Record<string, number> {
  return { K: k, N: n, bits, block_size: bs, ...(acc ? { accuracy_level: acc } : {}) };
}

/** `prefill`: build_config.prefill_int8_gemm off, on, or on where prefill-gemm-rule.ts says it cannot apply. */
function emitWeightOnlyPerChannel(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights, bits: 4 | 8, sdt: 'float32' | 'float16', acc: number, prefill: 'off' | 'on' | 'inapplicable'): string {
  const [n, k] = w.shape;
  let q: { q: Int8Array; scale: Float32Array };
  const pcs = weights.get(`${prefix}.per_channel_scale`);
  if (w.dtype === 'int8' && pcs && pcs.shape.length === 1 && pcs.shape[0] === n) {
    // Quantized by rank 0 from this rank's float shard (weight-only.ts), as TensorRT-LLM's loader would.
    q = { q: new Int8Array(w.data.buffer, w.data.byteOffset, w.data.length), scale: toFloat32(pcs, `${prefix}.per_channel_scale`) };
  } else if (w.dtype === 'int8' || w.dtype === 'uint8') {
    throw new Error(`${prefix}.weight: pre-quantized ${w.dtype} weights are interleaved for one GPU architecture's TensorRT-LLM kernel; tprun takes W8A16/W4A16 checkpoints with float weights`);
  } else {
    // A float shard built in one process (library build() of a W8A16 model): quantized here, the same way.
    q = quantizeWeightOnlyLinear(w, bits, `${prefix}.weight`);
  }
  const bs = rowBlock(prefix, k);
  const blocks = k / bs;
  const scales = new Float32Array(n * blocks);
  for (let r = 0; r < n; r++) scales.fill(q.scale[r], r * blocks, (r + 1) * blocks);
  let data: Uint8Array;
  if (bits === 8) {
    // MatMulNBits 8-bit stores unsigned bytes with the default zero point 128: shift int8 by 128.
    data = new Uint8Array(n * k);
    for (let i = 0; i < data.length; i++) data[i] = (q.q[i] & 0xff) ^ 0x80;
  } else {
    // MatMulNBits' 4-bit layout: pairs along K, low nibble first, q + 8 (its default zero point).
    data = new Uint8Array((n * k) / 2);
    for (let i = 0; i < n * k; i += 2) data[i >> 1] = (q.q[i] + 8) | ((q.q[i + 1] + 8) << 4);
  }
  const b = g.weight(`${prefix}.weight`, { dtype: 'uint8', shape: [n, blocks, (bs * bits) / 8], data });
  const s = g.weight(`${prefix}.per_channel_scale`, fromFloat32(scales, [n * blocks], sdt));
  const nbits = (h: Graph) => h.op('MatMulNBits', [x, b, s], nbitsAttrs(k, n, bits, bs, acc), MS);
  if (prefill === 'off') return nbits(g);
  // build() refuses such builds first (build-config.ts prefillInt8GemmRefusal): an engine recording the
  // option without its If would be a caller's bug, not a choice to make quietly here.
  if (prefill === 'inapplicable') throw new Error(`${prefix}: prefill_int8_gemm is on where it cannot apply (prefill-gemm-rule.ts prefillGemmApplies; a ${g.dtype} engine, ${sdt} scales); build() refuses such builds`);
  // build_config.prefill_int8_gemm: calls of more than one row (prefill, perplexity) take an integer GEMM
  // on a second, [K, N] int8 copy of the same q (4-bit values fit int8 as they are); one row (decode)
  // keeps MatMulNBits, which streams its own copy as fast or faster at M = 1. MatMulInteger runs MLAS's
  // QGEMM on B prepacked at load (core/mlas/lib/qgemm.cpp), faster at many rows than MatMulNBits' CompInt8
  // kernels (core/mlas/lib/sqnbitgemm_kernel_avx512vnni.cpp); docs/performance.md has the figures.
  const gemm = g.branch(`${prefix}.prefill`, 'float32', (h) => [perTokenInt8Gemm(h, x, prefix, q, n, k)]);
  const decode = g.branch(`${prefix}.decode`, 'float32', (h) => [nbits(h)]);
  return g.op('If', [manyRows(g, x)], { then_branch: gemm, else_branch: decode });
}

// One `x.shape[-2] > 1` per graph (every linear's input has the same rows), made at the first linear.
const manyRowsOf = new WeakMap<Graph, string>();
function manyRows(g: Graph, x: string): string {
  let c = manyRowsOf.get(g);
  if (!c) {
    const rows = g.op('Shape', [x], { start: -2, end: -1 });
    c = g.op('Squeeze', [g.op('Greater', [rows, g.int64s('one_row', [1])])]);
    manyRowsOf.set(g, c);
  }
  return c;
}

/**
 * x [.., K] float32 → x · qᵀ · scale: x rounded to int8 per row (max |x| / 127, as TensorRT-LLM's
 * per-token SmoothQuant and emitW8A8 below) and offset to uint8 (zero point 128), so that onnxruntime's
 * MatMulInteger runs MLAS's u8·s8 kernel (VNNI/AMX on x86; its s8·s8 path is ~40× slower there). Without
 * VNNI (AVX2) that kernel sums product pairs in int16 with saturation; the runner's sessions set
 * session.x64quantprecision, under which onnxruntime turns such weights unsigned at load on those CPUs
 * only (../engine/runtime.ts), which it does only to a weight of the If body's own graph (inBranch).
 */
function perTokenInt8Gemm(g: Graph, x: string, prefix: string, q: { q: Int8Array; scale: Float32Array }, n: number, k: number): string {
  const amax = g.op('ReduceMax', [g.op('Abs', [x]), g.int64s('axes', [-1])], { keepdims: 1 });
  const xs = g.op('Div', [g.op('Max', [amax, floatConst(g, 'eps', [1e-8], [])]), floatConst(g, 'i8max', [127], [])]);
  const r = g.op('Clip', [g.op('Round', [g.op('Div', [x, xs])]), floatConst(g, 'm127', [-127], []), floatConst(g, 'p127', [127], [])]);
  const xq = g.op('Cast', [g.op('Add', [r, floatConst(g, 'u8zero', [128], [])])], { to: 2 });
  const wk = g.weight(`${prefix}.prefill.weight`, { dtype: 'int8', shape: [k, n], data: transposeBytes(new Uint8Array(q.q.buffer, q.q.byteOffset, q.q.length), n, k) }, { inBranch: true });
  const ws = g.weight(`${prefix}.prefill.per_channel_scale`, { dtype: 'float32', shape: [n], data: new Uint8Array(Float32Array.from(q.scale).buffer) });
  const acc = g.op('MatMulInteger', [xq, wk, g.constant('u8zero', 'uint8', [], Uint8Array.of(128))]);
  return g.op('Mul', [g.op('Mul', [g.op('Cast', [acc], { to: 1 }), xs]), ws]);
}

function emitAwqInt4(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights, sdt: 'float32' | 'float16', acc: number): string {
  if (w.dtype !== 'int8') throw new Error(`${prefix}.weight: expected int8 [N/2, K] (int4 packed along N), got ${w.dtype}`);
  const [nHalf, k] = w.shape;
  const n = nHalf * 2;
  const sc = need(weights, `${prefix}.weights_scaling_factor`);
  if (sc.shape.length !== 2 || sc.shape[0] !== n) throw new Error(`${prefix}.weights_scaling_factor: expected [${n}, K/group], got [${sc.shape}]`);
  const groups = sc.shape[1];
  const bs = k / groups;
  if (!Number.isInteger(bs) || bs < 16 || (bs & (bs - 1))) throw new Error(`${prefix}: group size ${bs} (K=${k}, ${groups} groups) is not a power of two ≥ 16`);
  // TensorRT-LLM's nibbles (pairs of output rows, signed) → MatMulNBits' (pairs along K, q + 8).
  const q = unpackInt4AlongN(w.data, n, k);
  const packed = new Uint8Array((n * k) / 2);
  for (let i = 0; i < n * k; i += 2) packed[i >> 1] = (q[i] + 8) | ((q[i + 1] + 8) << 4);
  const b = g.weight(`${prefix}.weight`, { dtype: 'uint8', shape: [n, groups, bs / 2], data: packed });
  const s = g.weight(`${prefix}.weights_scaling_factor`, fromFloat32(toFloat32(sc), [n * groups], sdt));
  // No zero_points input: MatMulNBits then uses 8, the offset added above.
  return g.op('MatMulNBits', [x, b, s], nbitsAttrs(k, n, 4, bs, acc), MS);
}

/** Static per-tensor FP8 activations as TensorRT-LLM's FP8 GEMM sees them (saturating cast). */
function fp8Activations(g: Graph, x: string, prefix: string, weights: Weights): string {
  const name = `${prefix}.activation_scaling_factor`;
  const as = floatConst(g, name, [f32Scalar(need(weights, name), name)], []);
  // Cast (not Quantize/DequantizeLinear): ORT's QDQ fusion would turn a DQ pair around MatMul into an
  // integer kernel that does not take float8.
  const x8 = g.op('Cast', [g.op('Div', [x, as])], { to: 17, saturate: 1 });
  return g.op('Mul', [g.op('Cast', [x8], { to: 1 }), as]);
}

function emitW8A8(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights, algo: string): string {
  const [n, k] = w.shape;
  if (w.dtype !== 'int8') throw new Error(`${prefix}.weight: expected int8 for ${algo}, got ${w.dtype}`);
  const perTensor = algo === 'W8A8_SQ_PER_CHANNEL';
  const scaleName = perTensor ? `${prefix}.weights_scaling_factor` : `${prefix}.per_channel_scale`;
  const pcs = toFloat32(need(weights, scaleName), scaleName);
  if (pcs.length !== n) throw new Error(`${scaleName}: ${pcs.length} values for ${n} output channels`);
  let xs: string;
  if (perTensor) {
    const a = f32Scalar(need(weights, `${prefix}.activation_scaling_factor`), `${prefix}.activation_scaling_factor`);
    xs = floatConst(g, `${prefix}.activation_scaling_factor`, [a], []);
  } else {
    // TensorRT-LLM divides a row-parallel linear's input by its smoother before quantizing per token.
    const sm = weights.get(`${prefix}.smoother`);
    if (sm) x = g.op('Div', [x, g.weight(`${prefix}.smoother`, { dtype: 'float32', shape: [k], data: new Uint8Array(toFloat32(sm).buffer) })]);
    // Per token: scale = max(|x| over the row) / 127, computed at run time.
    const amax = g.op('ReduceMax', [g.op('Abs', [x]), g.int64s('axes', [-1])], { keepdims: 1 });
    xs = g.op('Div', [g.op('Max', [amax, floatConst(g, 'eps', [1e-8], [])]), floatConst(g, 'i8max', [127], [])]);
  }
  const lo = floatConst(g, 'm127', [-127], []), hi = floatConst(g, 'p127', [127], []);
  const xq = g.op('Cast', [g.op('Clip', [g.op('Round', [g.op('Div', [x, xs])]), lo, hi])], { to: 3 });
  const b = g.weight(`${prefix}.weight`, { dtype: 'int8', shape: [k, n], data: transposeBytes(w.data, n, k) });
  const acc = g.op('MatMulInteger', [xq, b]);
  const ws = g.weight(scaleName, { dtype: 'float32', shape: [n], data: new Uint8Array(pcs.buffer) });
  return g.op('Mul', [g.op('Mul', [g.op('Cast', [acc], { to: 1 }), xs]), ws]);
}

function emitFp8(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights): string {
  const [n, k] = w.shape;
  // TensorRT-LLM accepts int8 views of float8 weights (preprocess_perlayer_weights FP8).
  if (w.dtype !== 'float8_e4m3fn' && w.dtype !== 'int8') throw new Error(`${prefix}.weight: expected float8_e4m3fn for FP8, got ${w.dtype}`);
  const wsName = `${prefix}.weights_scaling_factor`;
  const ws = f32Scalar(need(weights, wsName), wsName);
  const zp8 = g.constant('fp8_zero', 'float8_e4m3fn', [], Uint8Array.of(0));
  const xin = weights.has(`${prefix}.activation_scaling_factor`) ? fp8Activations(g, x, prefix, weights) : x;
  const b = g.weight(`${prefix}.weight`, { dtype: 'float8_e4m3fn', shape: [k, n], data: transposeBytes(w.data, n, k) });
  const wf = g.op('DequantizeLinear', [b, floatConst(g, wsName, [ws], []), zp8]);
  return g.op('MatMul', [xin, wf]);
}
