// A rank's shard for `build --model` whose tensors are read only when the engine's weight file is
// written: each is read once, straight from the checkpoint into the buffer it is converted from, instead
// of being loaded whole into fresh memory first (which doubled the memory traffic and held the whole
// model in RSS). The tensors are those of LlamaForCausalLM.fromSource (same plan, same reads, same cast).

import type { PretrainedConfig } from '../core/config.js';
import type { DType, Tensor, Weights } from '../core/tensor.js';
import { LlamaForCausalLM } from '../model/llama.js';
import { castTensor } from '../core/dtype.js';
import { planRank, rankSource } from '../checkpoint/shard.js';
import { type TensorSource, rawSelectionRows, readSelection, readSelectionRows } from '../checkpoint/source.js';
import type { RawRange } from '../checkpoint/ranged.js';
import type { ModelShard } from './engine.js';
import { openHuggingFace, openMetaCkpt, type LoadOptions } from '../checkpoint/open.js';

/**
 * Where a lazy shard came from, in plain data: a worker thread given it opens the same source and gets
 * the same tensors (weight-jobs.ts converts and writes them there, in parallel).
 */
export interface LazyOrigin {
  dir: string;
  /** Meta's format (params.json + consolidated.NN.pth); else Hugging Face. */
  meta: boolean;
  load: Pick<LoadOptions, 'mapping' | 'rank' | 'useParallelEmbedding' | 'clamp'>;
}

/** A tensor whose bytes are read on access; `readRows` reads rows of dim 0 into a caller's buffer. */
export interface LazyTensor extends Tensor {
  /** Rows [r0, r1) of dim 0 (elements, for 1-D) in this tensor's dtype, into dest from offset 0. */
  readRows(r0: number, r1: number, dest: Uint8Array): void;
  /** Where rows [r0, r1) lie in the checkpoint's files when they are stored as read (no cast, no column
   *  cut, no permutation): the SIMD converter then maps them instead of reading them (half-simd.ts). */
  fileRows?(r0: number, r1: number): RawRange[] | undefined;
  /** Its name in the shard and the shard's origin, when it has one (opened by openLazyShard). */
  name?: string;
  origin?: LazyOrigin;
}

/** The lazy shard of `o.load.rank` from `o.dir`, and how to close its source once it is no longer read. */
export function openLazyShard(o: LazyOrigin): { shard: ModelShard; close: () => void } {
  const { source, config } = o.meta ? openMetaCkpt(o.dir, o.load) : openHuggingFace(o.dir, o.load);
  try {
    return { shard: lazyShard(source, config, o.load.rank ?? 0, { clamp: o.load.clamp }, o), close: () => source.close() };
  } catch (e) {
    source.close();
    throw e;
  }
}

export function isLazy(t: Tensor): t is LazyTensor {
  return typeof (t as LazyTensor).readRows === 'function';
}

/**
 * The shard of `rank`, read lazily from `source` (left open: the process that builds an engine exits
 * after saving it). Checks everything fromSource checks before any byte is read.
 */
export function lazyShard(whole: TensorSource, config: PretrainedConfig, rank: number, opts: { clamp?: boolean } = {}, origin?: LazyOrigin): ModelShard {
  const model = new LlamaForCausalLM(config, rank); // validates the mapping and heads
  const weights: Weights = new Map();
  // A pipeline stage's view: its own layers, renumbered from 0, and the ends of the model it owns.
  const source = rankSource(whole, config, rank);
  for (const e of planRank(source, config, rank)) {
    const srcDtype: DType = source.info(e.name).dtype;
    const what = `${source.where}: tensor ${e.name}`;
    const t: LazyTensor = {
      name: e.name,
      origin,
      dtype: e.dtype,
      shape: e.shape,
      get data(): Uint8Array {
        return castTensor(readSelection(source, e.name, e.sel), e.dtype, { clamp: opts.clamp, what }).data;
      },
      readRows(r0: number, r1: number, dest: Uint8Array): void {
        if (srcDtype !== e.dtype) {
          // A cast: through the whole-tensor path (rare: a tensor stored in another dtype than the model's).
          const rowBytes = dest.length / (r1 - r0);
          dest.set(this.data.subarray(r0 * rowBytes, r1 * rowBytes));
          return;
        }
        readSelectionRows(source, e.name, e.sel, r0, r1, dest);
      },
      fileRows(r0: number, r1: number): RawRange[] | undefined {
        return srcDtype === e.dtype ? rawSelectionRows(source, e.name, e.sel, r0, r1) : undefined;
      },
    };
    weights.set(e.name, t);
  }
  return { config: model.config, rank, weights };
}
