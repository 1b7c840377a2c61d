// BuildConfig: TensorRT-LLM's build_config field names, the subset an ONNX engine needs.

import { z } from 'zod';

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
  /** Extra outputs `calib.<linear prefix>` exposing every linear's input activations (for quantization). */
  calibration: z.boolean().default(false),
});

export type BuildConfig = z.infer<typeof BuildConfigSchema>;

export function resolveBuildConfig(partial: Partial<BuildConfig> = {}): BuildConfig {
  const c = BuildConfigSchema.parse(partial);
  if (c.max_input_len > c.max_seq_len) throw new Error(`max_input_len ${c.max_input_len} exceeds max_seq_len ${c.max_seq_len}`);
  return c;
}
