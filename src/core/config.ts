// TensorRT-LLM's PretrainedConfig for LLaMA, as written to a checkpoint's config.json.
// Field names follow TensorRT-LLM exactly so its users can read our checkpoints and vice versa.

export interface Mapping {
  world_size: number;
  tp_size: number;
  pp_size: number;
}

export interface QuantConfig {
  /** TensorRT-LLM QuantAlgo; the ones tprun runs are in src/sharding/tllm-layout.ts */
  quant_algo: string | null;
  /** null | 'INT8' */
  kv_cache_quant_algo: string | null;
  group_size?: number;
  has_zero_point?: boolean;
  pre_quant_scale?: boolean;
  /** SmoothQuant α (TensorRT-LLM QuantConfig.smoothquant_val). */
  smoothquant_val?: number;
  exclude_modules?: string[] | null;
}

export interface RotaryScaling {
  type: string; // 'linear' | 'dynamic' | 'llama3' | ...
  factor: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

export interface PretrainedConfig {
  architecture: 'LlamaForCausalLM';
  dtype: 'float32' | 'float16' | 'bfloat16';
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_size: number;
  intermediate_size: number;
  max_position_embeddings: number;
  hidden_act: 'silu';
  position_embedding_type: 'rope_gpt_neox';
  rotary_base: number;
  rotary_scaling: RotaryScaling | null;
  norm_epsilon: number;
  tie_word_embeddings?: boolean;
  /** Vocab-parallel embedding (sharded along the vocabulary) instead of replicated. */
  use_parallel_embedding: boolean;
  embedding_sharding_dim: 0 | 1;
  bos_token_id?: number;
  eos_token_id?: number | number[];
  mapping: Mapping;
  quantization: QuantConfig;
}
