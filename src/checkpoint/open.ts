// Opening a whole LLaMA checkpoint of any supported layout (Hugging Face, Meta, TensorRT-LLM) as
// TensorRT-LLM-named tensors plus the PretrainedConfig they imply, re-targeted to a parallel layout and
// dtype. Here, in the file-format layer, so that converting (checkpoint/convert.ts) needs no model class;
// LlamaForCausalLM (src/model/llama.ts) builds one rank's shard on top of these.
import type { Mapping, PretrainedConfig } from '../core/config.js';
import { type FloatDType } from './hf-config.js';
import { checkDir, openHfTensors, readHfConfig, tllmViewOfHf } from './hf.js';
import { openMeta } from './meta.js';
import { type TensorSource, llamaTensorNames } from './source.js';
import { shardContext } from './shard.js';
import { TllmSource } from './tllm.js';

export interface LoadOptions {
  /** Target dtype of float weights (default: the source's). */
  dtype?: FloatDType;
  /** Parallel layout; default a single rank. Partial objects are completed (world_size = tp × pp). */
  mapping?: Partial<Mapping>;
  /** This rank (default 0). */
  rank?: number;
  /** Saturate values beyond float16's range instead of failing. */
  clamp?: boolean;
  /** Vocab-parallel embedding table instead of replicated. */
  useParallelEmbedding?: boolean;
  embeddingShardingDim?: 0 | 1;
}

export function normalizeMapping(m: Partial<Mapping> | undefined): Mapping {
  const tp = m?.tp_size ?? (m?.world_size && !m.pp_size ? m.world_size : 1);
  const pp = m?.pp_size ?? 1;
  return { world_size: m?.world_size ?? tp * pp, tp_size: tp, pp_size: pp };
}

function applyOptions(config: PretrainedConfig, o: LoadOptions): PretrainedConfig {
  return {
    ...config,
    use_parallel_embedding: o.useParallelEmbedding ?? config.use_parallel_embedding,
    embedding_sharding_dim: o.embeddingShardingDim ?? config.embedding_sharding_dim,
  };
}

/** The full model of an HF directory as TensorRT-LLM tensors (for convert and tests). */
export function openHuggingFace(dir: string, o: LoadOptions = {}): { config: PretrainedConfig; source: TensorSource } {
  checkDir(dir);
  const config = applyOptions(readHfConfig(dir, { dtype: o.dtype, mapping: normalizeMapping(o.mapping) }), o);
  shardContext(config);
  const raw = openHfTensors(dir);
  try {
    return { config, source: tllmViewOfHf(raw, config, llamaTensorNames(config.num_hidden_layers)) };
  } catch (e) {
    raw.close();
    throw e;
  }
}

export function openMetaCkpt(dir: string, o: LoadOptions = {}): { config: PretrainedConfig; source: TensorSource } {
  checkDir(dir);
  const meta = openMeta(dir, { dtype: o.dtype, mapping: normalizeMapping(o.mapping) });
  const config = applyOptions(meta.config, o);
  try {
    shardContext(config);
    return { config, source: tllmViewOfHf(meta.source, config, llamaTensorNames(config.num_hidden_layers)) };
  } catch (e) {
    meta.source.close();
    throw e;
  }
}

/** The full model of a TensorRT-LLM checkpoint, re-targeted to `o.mapping` / `o.dtype` when given. */
export function openCheckpoint(dir: string, o: LoadOptions = {}): { config: PretrainedConfig; source: TensorSource } {
  checkDir(dir, '--model');
  const source = new TllmSource(dir);
  const config = applyOptions({
    ...source.config,
    dtype: o.dtype ?? source.config.dtype,
    mapping: o.mapping ? normalizeMapping(o.mapping) : source.config.mapping,
  }, o);
  try {
    shardContext(config);
  } catch (e) {
    source.close();
    throw e;
  }
  return { config, source };
}
