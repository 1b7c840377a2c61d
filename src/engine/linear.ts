// Every linear layer of the engine graph goes through emitLinear, so quantization plugs in at one place.
//
// Float weights ([N, K], HF orientation) keep that orientation in engines built for the CPU, as the
// operand of com.microsoft FusedMatMul with transB: onnxruntime's CPU provider packs B for its GEMM at
// session start either way (core/providers/cpu/math/matmul.cc, MatMul<float>::PrePack passes trans_b_attr_
// to the packing; FusedMatMul is that kernel with alpha and the trans attributes,
// contrib_ops/cpu/fused_matmul.cc), so the products are bit-identical to a MatMul against [K, N] and the
// build converts each weight as it streams instead of transposing it. Engines built for the GPU keep a
// MatMul against [K, N]: onnxruntime's WebGPU provider has no FusedMatMul kernel (it would run on the CPU).
// Quantized weights (CONTRACTS.md: a `.weight` that is not a float, or companions such as
// `.weights_scaling_factor` / `.per_channel_scale`) are handed to src/quantization/onnx-linear.ts:
//
//   export function emitQuantLinear(g: Graph, input: string, prefix: string, weights: Weights,
//                                   quant: QuantConfig, opts?): string   // returns the [.., N] output name
//
// That module is loaded once per build (loadQuantLinear) only when the model is quantized, so float
// engines do not depend on it.

import type { Tensor, Weights } from '../core/tensor.js';
import type { QuantConfig } from '../core/config.js';
import type { BuildConfig } from './build-config.js';
import { engineWeight, engineWeightTransposed } from './weight-convert.js';
import { MS, type Graph } from './graph.js';

/** The build options a linear's kernel choice depends on. */
export type QuantLinearOptions = Partial<Pick<BuildConfig, 'int4_matmul_dtype' | 'int4_accuracy_level' | 'device' | 'prefill_int8_gemm'>>;
export type QuantLinearEmitter = (g: Graph, input: string, prefix: string, weights: Weights, quant: QuantConfig, opts?: QuantLinearOptions) => string;
/** A float weight quantized at build into MatMulNBits blocks; undefined where K fits no block size. */
export type FloatQuantEmitter = (g: Graph, input: string, prefix: string, w: Tensor, bits: 8 | 4, blockSize: number, accuracyLevel: number, direct?: boolean) => { value: string; dtype: 'float32' | 'float16' } | undefined;

let quantEmitter: QuantLinearEmitter | undefined;
let floatQuantEmitter: FloatQuantEmitter | undefined;

/** Loads H5's quantized-linear emitter; call before building a graph for a quantized model. */
export async function loadQuantLinear(): Promise<void> {
  if (quantEmitter) return;
  // Built from a URL: a literal specifier would make engine/ and quantization/ import each other
  // (test/layers.test.js). A bundle cannot hold such an import: commands that build register the module
  // they hold instead (setQuantLinear), before any of it is needed.
  const url = new URL('../quantization/onnx-linear.js', import.meta.url).href;
  setQuantLinear((await import(url)) as Partial<QuantLinearModule>);
}

interface QuantLinearModule { emitQuantLinear: QuantLinearEmitter; emitBlockQuantizedFloat: FloatQuantEmitter }

/** The quantized-linear emitter module (src/quantization/onnx-linear.ts), from a caller above engine/. */
export function setQuantLinear(mod: Partial<QuantLinearModule>): void {
  if (typeof mod.emitQuantLinear !== 'function' || typeof mod.emitBlockQuantizedFloat !== 'function') throw new Error('src/quantization/onnx-linear.ts does not export emitQuantLinear and emitBlockQuantizedFloat');
  quantEmitter = mod.emitQuantLinear;
  floatQuantEmitter = mod.emitBlockQuantizedFloat;
}

const FLOATS = new Set(['float32', 'float16', 'bfloat16']);

// TensorRT-LLM's W8A16/W4A16 checkpoints hold float weights quantized at load (its
// weight_only_quantize_dict); so are they here, on the decoder layers' linears.
const WEIGHT_ONLY_AT_LOAD = new Set(['W8A16', 'W4A16']);
const LAYER_LINEAR = /^transformer\.layers\.\d+\.(attention\.(qkv|dense)|mlp\.(fc|gate|proj))$/;

export function isQuantizedLinear(prefix: string, weights: Weights, quant?: QuantConfig): boolean {
  const w = weights.get(`${prefix}.weight`);
  return (w !== undefined && !FLOATS.has(w.dtype))
    || weights.has(`${prefix}.weights_scaling_factor`) || weights.has(`${prefix}.per_channel_scale`)
    || (WEIGHT_ONLY_AT_LOAD.has(quant?.quant_algo ?? '') && LAYER_LINEAR.test(prefix));
}

export function requireTensor(weights: Weights, name: string): Tensor {
  const t = weights.get(name);
  if (!t) throw new Error(`missing tensor ${name} in the model's weights`);
  return t;
}

/** input [.., K] → output [.., N] for the linear whose weight is `${prefix}.weight` ([N, K]). */
export function emitLinear(g: Graph, input: string, prefix: string, weights: Weights, quant: QuantConfig, opts?: QuantLinearOptions): string {
  if (isQuantizedLinear(prefix, weights, quant)) {
    if (!quantEmitter) throw new Error(`${prefix} is quantized but the quantized-linear emitter was not loaded`);
    return quantEmitter(g, input, prefix, weights, quant, opts);
  }
  const w = requireTensor(weights, `${prefix}.weight`);
  if (w.shape.length !== 2) throw new Error(`${prefix}.weight: expected 2 dimensions, got [${w.shape}]`);
  const what = `tensor ${prefix}.weight`;
  if ((opts?.device ?? 'cpu') === 'cpu') return g.op('FusedMatMul', [input, g.weight(`${prefix}.weight`, engineWeight(w, g.dtype, what))], { transB: 1 }, MS);
  return g.op('MatMul', [input, g.weight(`${prefix}.weight`, engineWeightTransposed(w, g.dtype, what))]);
}

/**
 * The lm_head: as emitLinear, or, with build_config.lm_head_quant int8/int4, a float lm_head quantized
 * at build into MatMulNBits (build-config.ts says why). A lm_head whose K fits no block stays float, as
 * llama.cpp's quantizer falls back for such shapes (tensor_type_fallback). Returns the output and its
 * dtype (a quantized lm_head's is float32 unless int4_matmul_dtype 'auto' keeps float16).
 */
export function emitLmHead(g: Graph, input: string, prefix: string, weights: Weights, quant: QuantConfig, bc: BuildConfig): { value: string; dtype: 'float32' | 'float16' } {
  const mode = bc.lm_head_quant ?? 'none';
  if (mode !== 'none' && !isQuantizedLinear(prefix, weights, quant)) {
    if (!floatQuantEmitter) throw new Error(`${prefix}: lm_head_quant ${mode} but the quantized-linear emitter was not loaded`);
    const w = requireTensor(weights, `${prefix}.weight`);
    const y = floatQuantEmitter(g, input, prefix, w, mode === 'int8' ? 8 : 4, bc.lm_head_block_size, bc.int4_accuracy_level ?? 0, bc.int4_matmul_dtype === 'auto');
    if (y) return y;
  }
  return { value: emitLinear(g, input, prefix, weights, quant, bc), dtype: g.dtype };
}
