// The quantization algorithms tprun offers, their TensorRT-LLM checkpoint names, and what each needs.

export const QUANT_ALGOS = ['int8_wo', 'int4_wo', 'int4_awq', 'w8a8_sq', 'w8a8', 'fp8'] as const;
export type QuantAlgo = (typeof QUANT_ALGOS)[number];

/** TensorRT-LLM `quantization.quant_algo` for each algorithm. */
export const TRTLLM_QUANT_ALGO: Record<QuantAlgo, string> = {
  int8_wo: 'W8A16',
  int4_wo: 'W4A16',
  int4_awq: 'W4A16_AWQ',
  // Per-channel int8 weights, per-token dynamic int8 activations: TensorRT-LLM spells the per-token
  // variant W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN; the static per-tensor one is W8A8_SQ_PER_CHANNEL.
  w8a8_sq: 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN',
  w8a8: 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN',
  fp8: 'FP8',
};

export interface QuantOptions {
  algo?: QuantAlgo;
  groupSize?: number;       // int4 (default 128)
  kvCache?: 'int8';
  smoothAlpha?: number;     // SmoothQuant α (default 0.5)
  /** SmoothQuant activations: 'per-token' (dynamic, default) or 'per-tensor' (static, calibrated). */
  sqActivations?: 'per-token' | 'per-tensor';
  awqGrid?: number;
  awqClip?: boolean;
}

/** What the library quantizes with: the options plus the calibration text (the CLI's flags parse into this). */
export interface QuantRequest extends QuantOptions {
  calibFile: string;
  calibSamples: number;
}

export function needsCalibration(o: QuantOptions): boolean {
  return o.kvCache === 'int8' || o.algo === 'int4_awq' || o.algo === 'w8a8_sq' || o.algo === 'w8a8' || o.algo === 'fp8';
}

/** The linears of one decoder layer, by checkpoint prefix, grouped by the activation they read. */
export const LAYER_LINEARS = ['attention.qkv', 'attention.dense', 'mlp.fc', 'mlp.gate', 'mlp.proj'] as const;
