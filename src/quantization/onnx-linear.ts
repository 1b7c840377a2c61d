// Quantized linears in the engine graph (called by src/engine/linear.ts's emitLinear for every linear
// whose checkpoint tensors are quantized). Input [.., K] in the graph dtype, output [.., N].
//
//   W4A16 / W4A16_AWQ / W8A16  com.microsoft MatMulNBits (bits 4 | 8, block = group size; int8 per-channel
//                              = the row scale repeated over blocks of up to 256). AWQ's prequant factor is
//                              a Mul on the input. ORT dequantizes blocks on the fly: the weights stay
//                              4/8-bit in memory, the arithmetic is float (accuracy_level 0).
//   W8A8 SmoothQuant           x·(1/s) → int8 per token (dynamic) or per tensor (calibrated) → MatMulInteger
//                              (int8 × int8 → int32) → × x_scale × w_scale: integer arithmetic on CPU.
//   FP8                        activations quantize-dequantized through float8e4m3fn with their calibrated
//                              scale, weights DequantizeLinear'd from float8 storage, then a float MatMul:
//                              stored in 8 bits, computed in float (no FP8 GEMM in ORT's CPU/WebGPU EPs).

import type { Tensor, Weights } from '../checkpoint/tensor.js';
import type { Graph } from '../engine/graph.js';
import type { QuantConfig } from '../model/config.js';
import { toFloat32 } from './tensor-f32.js';
import { fromFloat32 } from '../engine/dtype.js';

const MS = 'com.microsoft';

function need(weights: Weights, name: string): Tensor {
  const t = weights.get(name);
  if (!t) throw new Error(`missing tensor ${name} (quantized checkpoint incomplete)`);
  return t;
}

function f32Scalar(t: Tensor, name: string): number {
  if (t.shape.length !== 0 && !(t.shape.length === 1 && t.shape[0] === 1)) throw new Error(`${name}: expected a scalar, got shape [${t.shape}]`);
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

export function emitQuantLinear(g: Graph, input: string, prefix: string, weights: Weights, quant: QuantConfig): string {
  const w = need(weights, `${prefix}.weight`);
  if (w.shape.length !== 2) throw new Error(`${prefix}.weight: expected 2 dimensions, got [${w.shape}]`);
  const pre = weights.get(`${prefix}.prequant_scaling_factor`);
  // int4 weight-only in a float16 engine: MatMulNBits takes float16 activations and scales (T1) directly,
  // so no Cast pair around every linear. Profiled on the H200 (docs/gpu.md) those Casts were 199 of the
  // 425 nodes of a TinyLlama-shape int4 decode step on WebGPU: 4.9 ms of its CPU time, 1.5 ms of GPU.
  if (g.dtype === 'float16' && w.dtype === 'uint8' && !pre) return emitInt4(g, input, prefix, w, weights, 'float16');
  // Otherwise quantized arithmetic runs in float32 whatever the engine dtype; fp16 engines cast around it.
  let x = g.dtype === 'float32' ? input : g.op('Cast', [input], { to: 1 });
  if (pre) x = g.op('Mul', [x, g.weight(`${prefix}.prequant_scaling_factor`, { ...pre, data: new Uint8Array(toFloat32(pre).buffer) , dtype: 'float32' })]);
  let y: string;
  if (w.dtype === 'uint8') y = emitInt4(g, x, prefix, w, weights);
  else if (w.dtype === 'int8' && (quant.quant_algo ?? '').startsWith('W8A8')) y = emitW8A8(g, x, prefix, w, weights, quant);
  else if (w.dtype === 'int8') y = emitInt8WeightOnly(g, x, prefix, w, weights);
  else if (w.dtype === 'float8_e4m3fn') y = emitFp8(g, x, prefix, w, weights);
  else throw new Error(`${prefix}.weight: no quantized kernel for dtype ${w.dtype} (quant_algo ${quant.quant_algo})`);
  return g.dtype === 'float32' ? y : g.op('Cast', [y], { to: 10 });
}

function emitInt4(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights, scaleDtype: 'float32' | 'float16' = 'float32'): string {
  const [n, kHalf] = w.shape;
  const k = kHalf * 2;
  const sc = need(weights, `${prefix}.weights_scaling_factor`);
  if (sc.shape.length !== 2 || sc.shape[0] !== n) throw new Error(`${prefix}.weights_scaling_factor: expected [${n}, K/group], got [${sc.shape}]`);
  const groups = sc.shape[1];
  const bs = k / groups;
  if (!Number.isInteger(bs) || bs < 16 || (bs & (bs - 1))) throw new Error(`${prefix}: group size ${bs} (K=${k}, ${groups} groups) is not a power of two ≥ 16`);
  const b = g.weight(`${prefix}.weight`, { dtype: 'uint8', shape: [n, groups, bs / 2], data: w.data });
  const s = g.weight(`${prefix}.weights_scaling_factor`, fromFloat32(toFloat32(sc), [n * groups], scaleDtype));
  // No zero_points input: MatMulNBits then uses 8, the offset the packed layout stores (q + 8).
  return g.op('MatMulNBits', [x, b, s], { K: k, N: n, bits: 4, block_size: bs }, MS);
}

function emitInt8WeightOnly(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights): string {
  const [n, k] = w.shape;
  const pcs = toFloat32(need(weights, `${prefix}.per_channel_scale`));
  if (pcs.length !== n) throw new Error(`${prefix}.per_channel_scale: ${pcs.length} values for ${n} output channels`);
  let bs = 16;
  while (bs < 256 && k % (bs * 2) === 0) bs *= 2;
  if (k % bs) throw new Error(`${prefix}: K=${k} is not a multiple of 16 (MatMulNBits blocks)`);
  const blocks = k / bs;
  // MatMulNBits 8-bit stores unsigned bytes with the default zero point 128: shift int8 by 128.
  const u = new Uint8Array(w.data.length);
  for (let i = 0; i < u.length; i++) u[i] = w.data[i] ^ 0x80;
  const scales = new Float32Array(n * blocks);
  for (let r = 0; r < n; r++) scales.fill(pcs[r], r * blocks, (r + 1) * blocks);
  const b = g.weight(`${prefix}.weight`, { dtype: 'uint8', shape: [n, blocks, bs], data: u });
  const s = g.weight(`${prefix}.per_channel_scale`, { dtype: 'float32', shape: [n * blocks], data: new Uint8Array(scales.buffer) });
  return g.op('MatMulNBits', [x, b, s], { K: k, N: n, bits: 8, block_size: bs }, MS);
}

function emitW8A8(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights, quant: QuantConfig): string {
  const [n, k] = w.shape;
  const pcs = need(weights, `${prefix}.per_channel_scale`);
  const perTensor = quant.quant_algo === 'W8A8_SQ_PER_CHANNEL' || quant.quant_algo === 'W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN';
  let xs: string;
  if (perTensor) {
    const a = f32Scalar(need(weights, `${prefix}.activation_scaling_factor`), `${prefix}.activation_scaling_factor`);
    xs = floatConst(g, `${prefix}.activation_scaling_factor`, [a], []);
  } else {
    // Per token: scale = max(|x| over the row) / 127, computed at run time.
    const amax = g.op('ReduceMax', [g.op('Abs', [x]), g.int64s('axes', [-1])], { keepdims: 1 });
    xs = g.op('Div', [g.op('Max', [amax, floatConst(g, 'eps', [1e-8], [])]), floatConst(g, 'i8max', [127], [])]);
  }
  const lo = floatConst(g, 'm127', [-127], []), hi = floatConst(g, 'p127', [127], []);
  const xq = g.op('Cast', [g.op('Clip', [g.op('Round', [g.op('Div', [x, xs])]), lo, hi])], { to: 3 });
  const b = g.weight(`${prefix}.weight`, { dtype: 'int8', shape: [k, n], data: transposeBytes(w.data, n, k) });
  const acc = g.op('MatMulInteger', [xq, b]);
  const ws = g.weight(`${prefix}.per_channel_scale`, { dtype: 'float32', shape: [n], data: new Uint8Array(toFloat32(pcs).buffer) });
  return g.op('Mul', [g.op('Mul', [g.op('Cast', [acc], { to: 1 }), xs]), ws]);
}

function emitFp8(g: Graph, x: string, prefix: string, w: Tensor, weights: Weights): string {
  const [n, k] = w.shape;
  const wsName = `${prefix}.weights_scaling_factor`;
  const ws = f32Scalar(need(weights, wsName), wsName);
  const zp8 = g.constant('fp8_zero', 'float8_e4m3fn', [], Uint8Array.of(0));
  const act = weights.get(`${prefix}.activation_scaling_factor`);
  let xin = x;
  if (act) {
    // Static per-tensor FP8 activations as TensorRT-LLM's FP8 GEMM sees them (saturating cast).
    const as = floatConst(g, `${prefix}.activation_scaling_factor`, [f32Scalar(act, `${prefix}.activation_scaling_factor`)], []);
    // Cast (not Quantize/DequantizeLinear): ORT's QDQ fusion would turn a DQ pair around MatMul into an
    // integer kernel that does not take float8.
    const x8 = g.op('Cast', [g.op('Div', [x, as])], { to: 17, saturate: 1 });
    xin = g.op('Mul', [g.op('Cast', [x8], { to: 1 }), as]);
  }
  const b = g.weight(`${prefix}.weight`, { dtype: 'float8_e4m3fn', shape: [k, n], data: transposeBytes(w.data, n, k) });
  const wf = g.op('DequantizeLinear', [b, floatConst(g, wsName, [ws], []), zp8]);
  return g.op('MatMul', [xin, wf]);
}
