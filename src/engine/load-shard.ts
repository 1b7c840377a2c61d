// One rank's model shard for `tprun build`: from a TensorRT-LLM checkpoint, or converted in memory from
// a Hugging Face / Meta directory (as TensorRT-LLM's from_hugging_face + build in one process).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LlamaForCausalLM } from '../model/llama.js';
import type { World } from '../rank/types.js';
import type { ModelShard } from './engine.js';
import { openLazyShard } from './lazy-shard.js';

export interface ShardSource {
  checkpoint?: string;
  model?: string;
  tp: number;
  /** Pipeline stages (default 1); the world has tp × pp ranks. */
  pp?: number;
  world: World;
  /** With `model`: vocab-parallel embedding table. */
  parallelEmbedding?: boolean;
}

export async function loadShardForBuild(s: ShardSource): Promise<ModelShard> {
  const rank = s.world.rank;
  if (s.checkpoint) return LlamaForCausalLM.fromCheckpoint(s.checkpoint, rank);
  const dir = s.model!;
  const pp = s.pp ?? 1;
  const load = { mapping: { tp_size: s.tp, world_size: s.tp * pp, pp_size: pp }, rank, useParallelEmbedding: s.parallelEmbedding };
  // Read lazily: each tensor goes from the checkpoint straight into the buffer it is converted from
  // when the engine's weights are written (the source stays open until this process exits).
  return openLazyShard({ dir, meta: existsSync(join(dir, 'params.json')), load }).shard;
}
