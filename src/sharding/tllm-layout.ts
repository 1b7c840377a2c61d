// THE table of quantized tensors in a TensorRT-LLM LLaMA checkpoint: for each quant_algo tprun writes or
// reads, every tensor a linear (and, where the scheme has them, a norm or the attention) carries — its
// name (role), shape in terms of the linear's N (output features) and K (input features), dtype and
// meaning — with the TensorRT-LLM / ModelOpt source each rule comes from. Quantizer, sharding, engine
// and the checker test all read this one table, as the tensor-parallel rules are one table
// (./rules.ts).
//
// It lives in sharding, not quantization: it is a description of tensors (names, axes, dtypes), reading no
// files and running no algorithm, and the tensor-parallel rules need its N/K axes to cut quantized
// companions. Here quantization, checkpoint and engine stand on sharding and sharding on src/core alone
// (test/layers.test.js); in quantization it made sharding and quantization import each other.
//
// Sources (GitHub): TRT = NVIDIA/TensorRT-LLM, MO = NVIDIA/TensorRT-Model-Optimizer.
//   TRT tensorrt_llm/models/modeling_utils.py   QuantConfig (fields), preprocess_weights /
//                                               preprocess_perlayer_weights (what the loader does to
//                                               each tensor before model.load)
//   TRT tensorrt_llm/quantization/layers.py     the Parameter shapes/dtypes model.load checks against
//   TRT tensorrt_llm/models/convert_utils.py    weight_only_quantize_dict (float weights + W8A16/W4A16)
//   TRT tensorrt_llm/models/llama/convert.py    SmoothQuant plugin layout (smooth_llama_model,
//                                               get_tllm_linear_sq_weight, generate_int8), INT8 KV scale
//   MO  modelopt/torch/export/quant_utils.py    pack_int4_in_uint8, to_quantized_weight,
//                                               get_weight_scaling_factor(_2), get_activation_scaling_factor
//   MO  modelopt/torch/export/model_config_utils.py  pack_linear_weights (AWQ weights .view(torch.int8))

import type { DType } from '../core/tensor.js';

/** A dimension of a stored tensor: the linear's N or K, N packed two per byte, K in groups, or 1. */
export type Dim = 'N' | 'N/2' | 'K' | 'K/g' | 1;
/** 'model' = the checkpoint's dtype (config.json `dtype`), where TensorRT-LLM declares the layer dtype. */
export type SpecDType = DType | 'model';

export interface TensorSpec {
  role: string;
  shape: Dim[];
  dtype: SpecDType;
  /** Only on row-parallel linears (attention.dense, mlp.proj). */
  rowOnly?: boolean;
  meaning: string;
  source: string;
}

/** quant_algo values tprun reads and writes (TensorRT-LLM QuantAlgo names). */
export const TLLM_QUANT_ALGOS = [
  'W8A16', 'W4A16', 'W4A16_AWQ', 'W4A8_AWQ', 'W8A8_SQ_PER_CHANNEL', 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN', 'FP8',
] as const;
export type TllmQuantAlgo = (typeof TLLM_QUANT_ALGOS)[number];
export const TLLM_KV_ALGOS = ['INT8'] as const;

const WEIGHT_FLOAT: TensorSpec = {
  role: 'weight', shape: ['N', 'K'], dtype: 'model',
  meaning: 'the float weight; TensorRT-LLM quantizes it per output channel at load (symmetric, amax/127 or amax/7)',
  // Portable form: int8 weights in this algo must be kernel-preprocessed (GPU-architecture specific
  // interleave), so ModelOpt and tprun write float weights and let the loader quantize them.
  source: 'TRT convert_utils.py weight_only_quantize_dict (quantizes any non-int8 *.weight of qkv/dense/fc/gate/proj); modeling_utils.py preprocess_perlayer_weights (W4A16/W8A16 branch)',
};

const AWQ_COMMON: TensorSpec[] = [
  {
    role: 'weight', shape: ['N/2', 'K'], dtype: 'int8',
    meaning: 'int4 q in [-8, 7], two output rows per byte: byte[i, k] = (q[2i, k] & 15) | (q[2i+1, k] << 4), two\'s complement nibbles; W ≈ q · weights_scaling_factor',
    source: 'MO quant_utils.py pack_int4_in_uint8 (pairs along out_dim, val0 low nibble), model_config_utils.py pack_linear_weights (.view(torch.int8)); TRT modeling_utils.py preprocess_perlayer_weights (param.transpose(-1, -2) → preprocess_weights_for_mixed_gemm quint4x2)',
  },
  {
    role: 'weights_scaling_factor', shape: ['N', 'K/g'], dtype: 'float32',
    meaning: 'per (output row, group of g inputs) scale amax/7 of the pre-scaled weight W·diag(1/prequant); for W4A16_AWQ a value of the model dtype (the loader casts it there), the weight rounded against it',
    source: 'MO quant_utils.py get_weight_scaling_factor (amax.float()/maxbound, block_sizes {-1: g}); TRT preprocess_perlayer_weights (transposed to (K/g, N), cast to the model dtype)',
  },
  {
    role: 'prequant_scaling_factor', shape: ['K'], dtype: 'model',
    meaning: 'the layer computes (x ⊙ prequant) · Wq^T: activations are MULTIPLIED by it (AWQ 1/s)',
    source: 'TRT layers.py WeightOnlyGroupwiseQuantLinear (Parameter (1, in_features) dtype=dtype; weight_only_groupwise_quant_matmul pre_quant_scale); preprocess_perlayer_weights (param.reshape(1, -1), no cast); MO quant_utils.py get_prequant_scaling_factor',
  },
];

export const LINEAR_LAYOUT: Record<TllmQuantAlgo, TensorSpec[]> = {
  W8A16: [WEIGHT_FLOAT],
  W4A16: [WEIGHT_FLOAT],
  W4A16_AWQ: AWQ_COMMON,
  W4A8_AWQ: [
    ...AWQ_COMMON,
    {
      role: 'activation_scaling_factor', shape: [1], dtype: 'float32',
      meaning: 'static FP8 scale of x ⊙ prequant: amax/448',
      source: 'MO quant_utils.py get_activation_scaling_factor; TRT preprocess_perlayer_weights W4A8_AWQ (prequant /= act, alpha = act · wsf2)',
    },
    {
      role: 'weights_scaling_factor_2', shape: [1], dtype: 'float32',
      meaning: 'per-tensor FP8 scale of the dequantized int4 weight, amax/448; the loader divides weights_scaling_factor by it and multiplies it back through alpha, so the product is unchanged',
      source: 'MO quant_utils.py get_weight_scaling_factor_2 (SequentialQuantizer[-1]); TRT preprocess_perlayer_weights W4A8_AWQ',
    },
  ],
  W8A8_SQ_PER_CHANNEL: [
    {
      role: 'weight', shape: ['N', 'K'], dtype: 'int8',
      meaning: 'round(W·diag(1/prequant) / weights_scaling_factor[n]) in [-127, 127]',
      source: 'TRT layers.py Int8SmoothQuantLinear / Int8SmoothQuantRowLinear (Parameter (out, in) trt.int8); MO quant_utils.py to_quantized_weight (INT8_SQ)',
    },
    {
      role: 'weights_scaling_factor', shape: ['N'], dtype: 'float32',
      meaning: 'per output channel weight scale amax/127 (dequantize axis 0)',
      source: 'TRT layers.py Int8SmoothQuantLinear (Parameter (out_features,) float32)',
    },
    {
      role: 'activation_scaling_factor', shape: [1], dtype: 'float32',
      meaning: 'static per-tensor int8 scale of x ⊙ prequant: amax/127',
      source: 'TRT layers.py Int8SmoothQuantLinear (Parameter (1,) float32)',
    },
    {
      role: 'prequant_scaling_factor', shape: ['K'], dtype: 'model',
      meaning: 'SmoothQuant 1/s, multiplied into the activations before quantization',
      source: 'TRT layers.py Int8SmoothQuantLinear (Parameter (in_features,) dtype=dtype; forward mul(x, prequant))',
    },
  ],
  W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN: [
    {
      role: 'weight', shape: ['N', 'K'], dtype: 'int8',
      meaning: 'round(W·diag(s) / per_channel_scale[n]) in [-127, 127]; for qkv/fc/gate s is folded into the preceding norm weight (fc and gate share one s), for dense/proj the input is divided by smoother',
      source: 'TRT layers.py SmoothQuantLinear / SmoothQuantRowLinear (Parameter (out, in) int8); llama/convert.py get_tllm_linear_sq_weight (weight.int8.col transposed), generate_int8 (to_i8 clips ±127)',
    },
    {
      role: 'per_channel_scale', shape: [1, 'N'], dtype: 'float32',
      meaning: 'per output channel weight scale amax/127 (scale_w_quant_orig.col)',
      source: 'TRT layers.py SmoothQuantLinear (scale_shape (1, out_features) float32); llama/convert.py get_tllm_linear_sq_weight (reshape(col_shape))',
    },
    {
      role: 'smoother', shape: [1, 'K'], dtype: 'float32', rowOnly: true,
      meaning: 'SmoothQuant s of a row-parallel linear: the activation is DIVIDED by it before per-token quantization',
      source: 'TRT layers.py SmoothQuantRowLinear (Parameter (1, in_features) float32), SmoothQuantGatedMLP.forward (inter / smoother); llama/convert.py smooth_llama_model',
    },
  ],
  FP8: [
    {
      role: 'weight', shape: ['N', 'K'], dtype: 'float8_e4m3fn',
      meaning: 'e4m3(W / weights_scaling_factor)',
      source: 'MO quant_utils.py to_quantized_weight (FP8); TRT preprocess_perlayer_weights FP8 (int8 views taken as float8_e4m3fn)',
    },
    {
      role: 'weights_scaling_factor', shape: [1], dtype: 'float32',
      meaning: 'per-tensor weight scale amax/448',
      source: 'TRT layers.py FP8Linear (Parameter shape (1,) float32); MO get_weight_scaling_factor',
    },
    {
      role: 'activation_scaling_factor', shape: [1], dtype: 'float32',
      meaning: 'static per-tensor FP8 scale of the input: amax/448',
      source: 'TRT layers.py FP8Linear (Parameter shape (1,) float32); MO get_activation_scaling_factor',
    },
  ],
};

/** Extra tensors on each RMS norm (input_layernorm, post_layernorm), besides `.weight`. */
export const NORM_LAYOUT: Partial<Record<TllmQuantAlgo, TensorSpec[]>> = {
  W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN: [{
    role: 'scale_to_int', shape: [1], dtype: 'model',
    meaning: 'unused with per-token scaling (the norm plugin computes per-token scales); TensorRT-LLM writes 1.0. The norm `.weight` itself carries the qkv (input_layernorm) or shared fc/gate (post_layernorm) smoothing: weight / s',
    source: 'TRT layers.py SmoothQuantRmsNorm (Parameter (1,) dtype=dtype); llama/convert.py get_tllm_linear_sq_weight (results[last_prefix] = [1.0] when per_token and no smoother), smooth_llama_model / apply_smoothing (layernorm_weights.div_(scales))',
  }],
};

/** Extra tensors on each layer's attention module for the KV-cache quant algo. */
export const KV_LAYOUT: Record<(typeof TLLM_KV_ALGOS)[number], TensorSpec[]> = {
  INT8: [{
    role: 'kv_cache_scaling_factor', shape: [1], dtype: 'float32',
    meaning: 'int8 KV cache: stored = round(k / scale), k = stored · scale; amax/127 of the cached K and V',
    source: 'TRT llama/convert.py (attention.kv_cache_scaling_factor = qkv_y.max()/127, reshape([1])); modeling_utils.py preprocess_weights process_kv_scaling_factor (adds kv_cache_rcp_scaling_factor when absent)',
  }],
};

/** Companion roles stored in the model dtype: they follow the checkpoint when it is converted to another dtype. */
export const MODEL_DTYPE_ROLES: ReadonlySet<string> = new Set(
  [...Object.values(LINEAR_LAYOUT).flat(), ...Object.values(NORM_LAYOUT).flat()]
    .filter((s) => s!.dtype === 'model' && s!.role !== 'weight').map((s) => s!.role),
);

/** Roles TensorRT-LLM's loader may add or accept but tprun neither writes nor needs. */
export const TOLERATED_ROLES = new Set(['kv_cache_rcp_scaling_factor']);

export const ROW_LINEARS = new Set(['attention.dense', 'mlp.proj']);
export const LINEAR_RE = /^transformer\.layers\.\d+\.(attention\.(?:qkv|dense)|mlp\.(?:fc|gate|proj))$/;
export const NORM_RE = /^transformer\.layers\.\d+\.(?:input_layernorm|post_layernorm)$/;
export const ATTENTION_RE = /^transformer\.layers\.\d+\.attention$/;

export function isTllmQuantAlgo(a: string | null | undefined): a is TllmQuantAlgo {
  return !!a && (TLLM_QUANT_ALGOS as readonly string[]).includes(a);
}

/** The spec of `<base>.<role>` under a quant config, or undefined when the table says nothing about it. */
export function specOf(base: string, role: string, quantAlgo: string | null | undefined, kvAlgo?: string | null): TensorSpec | undefined {
  if (isTllmQuantAlgo(quantAlgo)) {
    const lin = LINEAR_RE.exec(base);
    if (lin) {
      const s = LINEAR_LAYOUT[quantAlgo].find((x) => x.role === role);
      if (s && (!s.rowOnly || ROW_LINEARS.has(lin[1]))) return s;
    }
    if (NORM_RE.test(base)) return NORM_LAYOUT[quantAlgo]?.find((x) => x.role === role);
  }
  if (kvAlgo === 'INT8' && ATTENTION_RE.test(base)) return KV_LAYOUT.INT8.find((x) => x.role === role);
  return undefined;
}

/** Every tensor of one linear under `algo` (roles, for the checker and the engine). */
export function linearSpecs(algo: TllmQuantAlgo, linear: string): TensorSpec[] {
  return LINEAR_LAYOUT[algo].filter((s) => !s.rowOnly || ROW_LINEARS.has(linear));
}

/** Which stored axis carries N (and how many N rows share one index) and which carries K. */
export function axesOfSpec(s: TensorSpec): { n?: number; k?: number; packN?: number } {
  const out: { n?: number; k?: number; packN?: number } = {};
  s.shape.forEach((d, i) => {
    if (d === 'N') out.n = i;
    else if (d === 'N/2') { out.n = i; out.packN = 2; }
    else if (d === 'K' || d === 'K/g') out.k = i;
  });
  return out;
}

/** The concrete shape of a spec for a linear of n outputs, k inputs and group size g. */
export function shapeOf(s: TensorSpec, n: number, k: number, g = 128): number[] {
  return s.shape.map((d) => (d === 'N' ? n : d === 'N/2' ? n / 2 : d === 'K' ? k : d === 'K/g' ? k / g : 1));
}

export function dtypeOf(s: TensorSpec, modelDtype: DType): DType {
  return s.dtype === 'model' ? modelDtype : s.dtype;
}

/**
 * config.json `quantization` fields TensorRT-LLM's QuantConfig takes (modeling_utils.py QuantConfig:
 * quant_algo, kv_cache_quant_algo, group_size, smoothquant_val, clamp_val, use_meta_recipe,
 * has_zero_point, pre_quant_scale, exclude_modules). QuantConfig(**config) raises TypeError on any
 * other key, so nothing else may be written there. exclude_modules stays unset: TensorRT-LLM's default
 * (quantization/quantize.py quantize_layers: '*lm_head', '*vocab_embedding', …) leaves float exactly what
 * tprun leaves float.
 */
export const QUANT_CONFIG_FIELDS = new Set([
  'quant_algo', 'kv_cache_quant_algo', 'group_size', 'smoothquant_val', 'clamp_val', 'use_meta_recipe',
  'has_zero_point', 'pre_quant_scale', 'exclude_modules',
]);

type KShape = { hidden_size: number; intermediate_size: number; num_attention_heads: number; head_size: number };

/** The input features K of one layer's linears in a (tp=1) model. */
function linearKs(c: KShape): Record<string, number> {
  return {
    'attention.qkv': c.hidden_size,
    'attention.dense': c.num_attention_heads * c.head_size,
    'mlp.fc': c.hidden_size,
    'mlp.gate': c.hidden_size,
    'mlp.proj': c.intermediate_size,
  };
}

/** The shape of one layer's linears in a (tp=1) model: N and K of each. */
export function linearDims(c: KShape & { num_key_value_heads: number }): Record<string, { n: number; k: number }> {
  const q = c.num_attention_heads * c.head_size;
  const k = linearKs(c);
  return {
    'attention.qkv': { n: q + 2 * c.num_key_value_heads * c.head_size, k: k['attention.qkv'] },
    'attention.dense': { n: c.hidden_size, k: k['attention.dense'] },
    'mlp.fc': { n: c.intermediate_size, k: k['mlp.fc'] },
    'mlp.gate': { n: c.intermediate_size, k: k['mlp.gate'] },
    'mlp.proj': { n: c.hidden_size, k: k['mlp.proj'] },
  };
}

export interface LinearK {
  linear: string;
  /** K of the full (tp=1) linear. */
  k: number;
  /** K of one rank's share: row-parallel linears (ROW_LINEARS) are cut along K, the others hold it whole. */
  perRank: number;
  rowParallel: boolean;
}

/** Each linear's K per rank at `tp`, in the order of the layer (qkv, dense, fc, gate, proj). */
export function kPerRank(c: KShape, tp: number): LinearK[] {
  return Object.entries(linearKs(c)).map(([linear, k]) => {
    const rowParallel = ROW_LINEARS.has(linear);
    return { linear, k, perRank: rowParallel ? k / tp : k, rowParallel };
  });
}

export interface ExpectedTensor { name: string; dtype: DType; shape: number[]; spec: TensorSpec }

/** Every tensor the table prescribes for a full (tp=1) model under config.quantization. */
export function expectedQuantTensors(c: {
  dtype: string; num_hidden_layers: number; hidden_size: number; intermediate_size: number;
  num_attention_heads: number; num_key_value_heads: number; head_size: number;
  quantization?: { quant_algo?: string | null; kv_cache_quant_algo?: string | null; group_size?: number };
}): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  const algo = c.quantization?.quant_algo;
  const kv = c.quantization?.kv_cache_quant_algo;
  const g = c.quantization?.group_size ?? 128;
  const dt = c.dtype as DType;
  const dims = linearDims(c);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const layer = `transformer.layers.${l}`;
    if (isTllmQuantAlgo(algo)) {
      for (const [lin, { n, k }] of Object.entries(dims)) {
        for (const s of linearSpecs(algo, lin)) out.push({ name: `${layer}.${lin}.${s.role}`, dtype: dtypeOf(s, dt), shape: shapeOf(s, n, k, g), spec: s });
      }
      for (const norm of ['input_layernorm', 'post_layernorm']) {
        for (const s of NORM_LAYOUT[algo] ?? []) out.push({ name: `${layer}.${norm}.${s.role}`, dtype: dtypeOf(s, dt), shape: shapeOf(s, c.hidden_size, c.hidden_size), spec: s });
      }
    }
    if (kv === 'INT8') for (const s of KV_LAYOUT.INT8) out.push({ name: `${layer}.attention.${s.role}`, dtype: dtypeOf(s, dt), shape: [1], spec: s });
  }
  return out;
}

const FLOATS = new Set<DType>(['float32', 'float16', 'bfloat16']);

/**
 * Why a checkpoint's full tensors do not follow the table, or undefined. Reading is lenient only where
 * TensorRT-LLM's loader is (float scales of another float dtype are cast there; FP8 weights may be int8
 * views) — shapes and integer layouts must match.
 */
export function layoutProblem(c: Parameters<typeof expectedQuantTensors>[0], info: (name: string) => { dtype: DType; shape: number[] } | undefined): string | undefined {
  for (const e of expectedQuantTensors(c)) {
    const m = info(e.name);
    if (!m) return `missing tensor ${e.name} (${c.quantization?.quant_algo ?? c.quantization?.kv_cache_quant_algo}: ${e.spec.meaning})`;
    const dtOk = m.dtype === e.dtype || (FLOATS.has(m.dtype) && FLOATS.has(e.dtype))
      || (e.dtype === 'float8_e4m3fn' && m.dtype === 'int8');
    const shapeOk = m.shape.join() === e.shape.join()
      || (e.shape.length === 1 && e.shape[0] === 1 && m.shape.reduce((a, b) => a * b, 1) === 1);
    if (!dtOk || !shapeOk) {
      const hint = e.spec.role === 'weight' && (m.dtype === 'int8' || m.dtype === 'uint8') && e.dtype !== m.dtype
        ? ' (pre-quantized weight-only weights are interleaved for one GPU architecture\'s kernel: write float weights, as ModelOpt does)'
        : m.dtype === 'uint8' && e.spec.role === 'weight' ? ' (an int4 layout older tprun wrote: convert again)' : '';
      return `tensor ${e.name} is ${m.dtype}[${m.shape}], ${c.quantization?.quant_algo} wants ${e.dtype}[${e.shape}]${hint}`;
    }
  }
  return undefined;
}
