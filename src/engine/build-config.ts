// BuildConfig: TensorRT-LLM's build_config field names, the subset an ONNX engine needs.

import { z } from 'zod';

export const BuildConfigSchema = z.object({
  max_batch_size: z.number().int().positive().default(8),
  max_input_len: z.number().int().positive().default(512),
  max_seq_len: z.number().int().positive().default(1024),
  /** Activation and weight dtype of the graph (logits and values crossing ranks are always float32). */
  dtype: z.enum(['float32', 'float16']).default('float32'),
  device: z.enum(['cpu', 'gpu']).default('cpu'),
  /** Extra outputs `calib.<linear prefix>` exposing every linear's input activations (for quantization). */
  calibration: z.boolean().default(false),
});

export type BuildConfig = z.infer<typeof BuildConfigSchema>;

export function resolveBuildConfig(partial: Partial<BuildConfig> = {}): BuildConfig {
  const c = BuildConfigSchema.parse(partial);
  if (c.max_input_len > c.max_seq_len) throw new Error(`max_input_len ${c.max_input_len} exceeds max_seq_len ${c.max_seq_len}`);
  return c;
}
