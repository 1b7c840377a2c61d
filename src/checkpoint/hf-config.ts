// Hugging Face LLaMA config.json -> TensorRT-LLM PretrainedConfig. Accepts transformers 4 keys
// (rope_theta, rope_scaling, torch_dtype) and 5 keys (rope_parameters, dtype).
import fs from 'node:fs';
import { z } from 'zod/v3'; // ~10 modules, not the v4 root's ~95: every convert rank parses a config (see rank/wire-schema.ts)
import type { Mapping, PretrainedConfig, RotaryScaling } from '../core/config.js';
import { InputError } from '../core/errors.js';

const posInt = z.number().int().positive();
const ropeScaling = z.object({
  rope_type: z.string().optional(),
  type: z.string().optional(),
  rope_theta: z.number().positive().optional(),
  factor: z.number().positive().optional(),
  low_freq_factor: z.number().optional(),
  high_freq_factor: z.number().optional(),
  original_max_position_embeddings: z.number().int().optional(),
}).passthrough();

export const HfLlamaConfig = z.object({
  architectures: z.array(z.string()).optional(),
  model_type: z.string().optional(),
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt.nullish(),
  head_dim: posInt.nullish(),
  vocab_size: posInt,
  max_position_embeddings: posInt.default(2048),
  rms_norm_eps: z.number().positive().default(1e-6),
  hidden_act: z.string().default('silu'),
  rope_theta: z.number().positive().nullish(),
  rope_scaling: ropeScaling.nullish(),
  rope_parameters: ropeScaling.nullish(),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  torch_dtype: z.string().nullish(),
  dtype: z.string().nullish(),
  bos_token_id: z.number().int().nullish(),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullish(),
}).passthrough();
export type HfLlamaConfig = z.infer<typeof HfLlamaConfig>;

export type FloatDType = PretrainedConfig['dtype'];
export const FLOAT_NAMES: Record<string, FloatDType> = {
  float32: 'float32', float: 'float32', fp32: 'float32',
  float16: 'float16', half: 'float16', fp16: 'float16',
  bfloat16: 'bfloat16', bf16: 'bfloat16',
};

export function parseFloatDType(s: string, where: string): FloatDType {
  const d = FLOAT_NAMES[s.replace(/^torch\./, '')];
  if (!d) throw new InputError(`${where}: unsupported dtype ${JSON.stringify(s)} (float32, float16 or bfloat16)`);
  return d;
}

export function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e: any) {
    throw new InputError(`${file}: cannot read (${e.code ?? e.message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e: any) {
    throw new InputError(`${file}: malformed JSON (${String(e.message).split('\n')[0]})`);
  }
}

function zodWhere(file: string, err: z.ZodError): string {
  const i = err.issues[0];
  return `${file}: ${i.path.join('.') || '(root)'}: ${i.message}`;
}

function rotaryScaling(s: z.infer<typeof ropeScaling> | null | undefined, file: string): RotaryScaling | null {
  if (!s) return null;
  const type = s.rope_type ?? s.type ?? 'default';
  if (type === 'default') return null;
  if (!['linear', 'dynamic', 'llama3'].includes(type)) throw new InputError(`${file}: unsupported rope scaling type ${JSON.stringify(type)}`);
  if (s.factor === undefined) throw new InputError(`${file}: rope scaling ${type} needs a factor`);
  const out: RotaryScaling = { type, factor: s.factor };
  if (type === 'llama3') {
    for (const k of ['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'] as const) {
      if (s[k] === undefined) throw new InputError(`${file}: llama3 rope scaling needs ${k}`);
      out[k] = s[k];
    }
  }
  return out;
}

export function pretrainedFromHf(raw: unknown, file: string, opts: { dtype?: FloatDType; mapping: Mapping }): PretrainedConfig {
  const parsed = HfLlamaConfig.safeParse(raw);
  if (!parsed.success) throw new InputError(zodWhere(file, parsed.error));
  const c = parsed.data;
  const arch = c.architectures?.[0] ?? (c.model_type === 'llama' ? 'LlamaForCausalLM' : c.model_type ?? 'unknown');
  if (arch !== 'LlamaForCausalLM') throw new InputError(`${file}: unsupported architecture ${arch} (only LlamaForCausalLM)`);
  if (c.hidden_act !== 'silu') throw new InputError(`${file}: unsupported hidden_act ${c.hidden_act} (only silu)`);
  if (c.attention_bias || c.mlp_bias) throw new InputError(`${file}: attention_bias / mlp_bias are not supported`);
  const srcDtype = c.dtype ?? c.torch_dtype;
  const theta = c.rope_parameters?.rope_theta ?? c.rope_theta ?? 10000;
  const heads = c.num_attention_heads;
  const headSize = c.head_dim ?? c.hidden_size / heads;
  if (!Number.isInteger(headSize)) throw new InputError(`${file}: hidden_size ${c.hidden_size} does not divide by num_attention_heads ${heads}`);
  const kv = c.num_key_value_heads ?? heads;
  if (heads % kv !== 0) throw new InputError(`${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kv}`);
  return {
    architecture: 'LlamaForCausalLM',
    dtype: opts.dtype ?? (srcDtype ? parseFloatDType(srcDtype, `${file}: dtype`) : 'float32'),
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: heads,
    num_key_value_heads: kv,
    head_size: headSize,
    intermediate_size: c.intermediate_size,
    max_position_embeddings: c.max_position_embeddings,
    hidden_act: 'silu',
    position_embedding_type: 'rope_gpt_neox',
    rotary_base: theta,
    rotary_scaling: rotaryScaling(c.rope_parameters ?? c.rope_scaling, file),
    norm_epsilon: c.rms_norm_eps,
    tie_word_embeddings: c.tie_word_embeddings,
    use_parallel_embedding: false,
    embedding_sharding_dim: 0,
    ...(c.bos_token_id != null ? { bos_token_id: c.bos_token_id } : {}),
    ...(c.eos_token_id != null ? { eos_token_id: c.eos_token_id } : {}),
    mapping: opts.mapping,
    quantization: { quant_algo: null, kv_cache_quant_algo: null },
  };
}
