// BuildConfig: TensorRT-LLM's build_config field names, the subset an ONNX engine needs.

import { prefillGemmApplies, int4Direct, perChannelWeightOnly, type PrefillGemmConfig } from './prefill-gemm-rule.js';
import { z } from 'zod/v3'; // ~10 modules, not the v4 root's ~95: `import 'tprun'` in every rank loads this file (see rank/wire-schema.ts)

export const BuildConfigSchema = z.object({
  max_batch_size: z.number().int().positive().default(8),
  max_input_len: z.number().int().positive().default(512),
  max_seq_len: z.number().int().positive().default(1024),
  /** Activation and weight dtype of the graph (logits and values crossing ranks are always float32). */
  dtype: z.enum(['float32', 'float16']).default('float32'),
  device: z.enum(['cpu', 'gpu']).default('cpu'),
  /**
   * Activation dtype of int4 weight-only MatMulNBits (W4A16, W4A16_AWQ) in a float16 engine: 'float32'
   * runs the float32 kernel between a Cast pair (decodes faster on the H200's WebGPU), 'auto' the engine
   * dtype with no Casts (prefills faster there): docs/gpu.md. TensorRT-LLM's counterpart is the dtype of
   * its plugin_config.weight_only_groupwise_quant_matmul_plugin ('auto' = the model dtype).
   */
  int4_matmul_dtype: z.enum(['float32', 'auto']).default('float32'),
  /**
   * MatMulNBits' `accuracy_level` (the minimum precision its activations keep) on every weight-only
   * linear, 8-bit and 4-bit: 4 quantizes activations to int8 per block, as llama.cpp's Q8_0/Q4_0 dot
   * products do. Without it onnxruntime's CPU provider has no 8-bit kernel on x86 and dequantizes the
   * whole weight on every call (onnxruntime contrib_ops/cpu/quantization/matmul_nbits.cc, GetComputeType
   * falls back to the float path below level 4). Spelled as onnxruntime-genai's model builder spells its
   * extra option (src/python/py/models/builder.py, int4_accuracy_level). Default: 4 for the CPU, 0 (the
   * attribute left out) for the GPU: WebGPU's MatMulNBits takes level 4 as leave to use its DP4A int8
   * kernels (contrib_ops/webgpu/quantization/matmul_nbits.cc, ApplyMatMulNBits: for prefill-sized M, and
   * for every call on FP32-only and Qualcomm GPUs), whose speed and accuracy are not measured here yet.
   * Engines built before this field have no attribute, whatever their device.
   */
  int4_accuracy_level: z.number().int().min(0).max(4).optional(),
  /**
   * lm_head as MatMulNBits (weights quantized at build from the float lm_head, one scale per
   * `lm_head_block_size` weights, accuracy_level as the decoder linears) instead of a float MatMul. On the
   * CPU a float lm_head is read in float32 whatever the engine dtype (README: no float16 MatMul on x86), and
   * on a vocab of 32000 × 2048 that is 262 MB a token: more than all the int4 decoder linears of a 16-layer
   * model. llama.cpp's quantizer does the same for its output tensor (src/llama-quant.cpp,
   * llama_tensor_get_type_impl: Q8_0 in a Q8_0 file, Q6_K in a Q4_0 one). Default: 'int8' for CPU builds of
   * weight-only models (W8A16, W4A16, W4A16_AWQ), 'none' otherwise. Tied embeddings keep their float
   * gather table; only the lm_head copy is quantized.
   */
  lm_head_quant: z.enum(['none', 'int8', 'int4']).optional(),
  /**
   * Weights per scale of a quantized lm_head (MatMulNBits block_size: a power of two, 16–256; the largest
   * such ≤ it that divides K is used). Default 256 for CPU builds with int4_accuracy_level 4 (the CPU's own
   * default), 32 (ggml's Q8_0) otherwise. At level 4 onnxruntime's CPU kernel rounds the activations to int8
   * per block (CompInt8) and reads 256-wide blocks of the [2048, 32000] lm_head in 0.72–0.74× the time of
   * 32-wide ones, from 9% fewer bytes (scripts/cpu/nbits-bench.mjs); 32-wide, the lm_head was 40% of an
   * int4_wo decode step on the TinyLlama shape (docs/performance.md). On brown-llama-a, level 4 with 256
   * keeps 32's greedy tokens (int8_wo and int4_wo at tp 1, int8_wo at tp 2); held-out perplexity int8_wo
   * 71.878 for 71.878 (tp 2: 71.895 for 71.866), int4_wo 73.212 for 73.202. Not with float activations
   * (level 0, and the WGSL kernels, which ignore the level): there a greedy near-tie of brown-llama-a (prompt
   * 0's third new token, 260 over 262) that 32 and 64 keep by 0.008–0.04 shrinks to 0.0002 on the CPU at 256
   * and flips on WGSL at 128 and 256 (by 0.0009–0.0014), so the same engine decodes differently there.
   */
  lm_head_block_size: z.number().int().min(16).max(256).refine((b) => (b & (b - 1)) === 0, 'a power of two').optional(),
  /**
   * CPU builds of per-channel weight-only models (int8_wo = W8A16; W4A16 checkpoints): every decoder
   * linear also holds its q as int8 [K, N] (`<prefix>.prefill.weight`), and calls of more than one row
   * (prefill, perplexity) multiply it with activations rounded to int8 per row on onnxruntime's integer
   * GEMM (MatMulInteger) inside an If; one-row calls (decode) keep MatMulNBits. Faster prompts, at the
   * price of the decoder linears' weights held twice and per-row rather than per-block activation
   * rounding (docs/quantization.md has both, docs/performance.md the speed): opt-in. Which builds it
   * applies to is prefill-gemm-rule.ts prefillGemmApplies; the others are refused
   * (prefillInt8GemmRefusal).
   */
  prefill_int8_gemm: z.boolean().optional(),
  /** Extra outputs `calib.<linear prefix>` exposing every linear's input activations (for quantization). */
  calibration: z.boolean().default(false),
});

/** lm_head_block_size is always set once resolved (resolveBuildConfig: its default depends on the device). */
export type BuildConfig = Omit<z.infer<typeof BuildConfigSchema>, 'lm_head_block_size'> & { lm_head_block_size: number };

export function resolveBuildConfig(partial: Partial<BuildConfig> = {}): BuildConfig {
  const c = BuildConfigSchema.parse(partial);
  c.int4_accuracy_level ??= c.device === 'cpu' ? 4 : 0;
  c.lm_head_block_size ??= c.device === 'cpu' && c.int4_accuracy_level === 4 ? 256 : 32;
  if (c.max_input_len > c.max_seq_len) throw new Error(`max_input_len ${c.max_input_len} exceeds max_seq_len ${c.max_seq_len}`);
  return c as BuildConfig;
}

/**
 * The block a quantized lm_head of K inputs gets from lm_head_block_size: the largest power of two ≤ it,
 * and ≥ 16, dividing K (as ../quantization/onnx-linear.ts's emitBlockQuantizedFloat picks it); undefined
 * where K is not a multiple of 16 (the lm_head then stays float).
 */
export function lmHeadBlockFor(k: number, requested: number): number | undefined {
  let bs = requested;
  while (bs > 16 && k % bs) bs /= 2;
  return k % bs ? undefined : bs;
}

/** quant_algo of the weight-only schemes (CPU engines get an int8 lm_head unless told otherwise; --kernels wgsl runs them). */
export const WEIGHT_ONLY_ALGOS = new Set(['W8A16', 'W4A16', 'W4A16_AWQ']);

/** build_config.lm_head_quant once the model's quant_algo is known (the value the engine's config records). */
export function resolveLmHeadQuant(bc: BuildConfig, quantAlgo: string | null | undefined): BuildConfig {
  bc.lm_head_quant ??= bc.device === 'cpu' && WEIGHT_ONLY_ALGOS.has(quantAlgo ?? '') ? 'int8' : 'none';
  return bc;
}

/**
 * Why build_config.prefill_int8_gemm would do nothing for this engine (undefined: it applies), so that it
 * is refused rather than recorded for an engine without it: the reasons prefill-gemm-rule.ts
 * prefillGemmApplies says no, in flag terms. `device` undefined: not yet known (auto), taken as the CPU.
 */
export function prefillInt8GemmRefusal(bc: PrefillGemmConfig, quantAlgo: string | null | undefined, quantFlag?: string): string | undefined {
  if (prefillGemmApplies({ ...bc, device: bc.device ?? 'cpu' }, quantAlgo)) return undefined;
  if (bc.device === 'gpu') return '--prefill-int8-gemm is for --device cpu builds (the WGSL kernels read MatMulNBits linears only)';
  const given = quantFlag ? `--quant ${quantFlag} (${quantAlgo})` : quantAlgo ? `quant_algo ${quantAlgo}` : 'a float engine (no --quant)';
  if (!perChannelWeightOnly(quantAlgo)) return `--prefill-int8-gemm needs per-channel weight-only linears (--quant int8_wo, or a W4A16 checkpoint), not ${given}`;
  if (int4Direct(bc, quantAlgo)) return '--prefill-int8-gemm does nothing with --int4-matmul-dtype auto (float16 MatMulNBits scales); leave one of them out';
  throw new Error(`prefillInt8GemmRefusal: no reason for quant_algo ${quantAlgo} (prefill-gemm-rule.ts and this function disagree)`);
}
