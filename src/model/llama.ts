// LlamaForCausalLM: one rank's shard of a LLaMA in TensorRT-LLM's names and layout (see CONTRACTS.md),
// loaded from Hugging Face, Meta or TensorRT-LLM checkpoints, and saved as a TensorRT-LLM checkpoint.
import fs from 'node:fs';
import type { PretrainedConfig } from '../core/config.js';
import type { DType, Tensor, Weights } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { checkDir } from '../checkpoint/hf.js';
import { type LoadOptions, normalizeMapping, openCheckpoint, openHuggingFace, openMetaCkpt } from '../checkpoint/open.js';
import { type TensorSource, expectedShape, llamaTensorNames } from '../checkpoint/source.js';
import { ruleFor, selection, shardShape } from '../sharding/rules.js';
import { planRank, produceShards, rankSource, shardContext } from '../checkpoint/shard.js';
import { stageTensors } from '../sharding/mapping.js';
import { SafetensorsFile, SafetensorsWriter, readSafetensors } from '../checkpoint/safetensors.js';
import { rankFile, readTllmConfig, writeConfig } from '../checkpoint/tllm.js';
import { FLOAT_DTYPES, byteSize } from '../core/dtype.js';

// The options of every loader below, so part of this class's API.
export type { LoadOptions };

export class LlamaForCausalLM {
  weights: Weights = new Map();

  constructor(public config: PretrainedConfig, public rank = 0) {
    shardContext(config);
  }

  /** Shards a full-model source for one rank (the common path of every loader). */
  static fromSource(src: TensorSource, config: PretrainedConfig, rank: number, o: LoadOptions = {}): LlamaForCausalLM {
    const model = new LlamaForCausalLM(config, rank);
    const view = rankSource(src, config, rank);
    const plan = planRank(view, config, rank);
    for (const [name, t] of produceShards(view, plan, { clamp: o.clamp })) model.weights.set(name, t);
    return model;
  }

  /** The full model of an HF directory as TensorRT-LLM tensors (for convert and tests). */
  static openHuggingFace(dir: string, o: LoadOptions = {}): { config: PretrainedConfig; source: TensorSource } {
    return openHuggingFace(dir, o);
  }

  static fromHuggingFace(dir: string, o: LoadOptions = {}): LlamaForCausalLM {
    const { config, source } = LlamaForCausalLM.openHuggingFace(dir, o);
    try {
      return LlamaForCausalLM.fromSource(source, config, o.rank ?? 0, o);
    } finally {
      source.close();
    }
  }

  static openMetaCkpt(dir: string, o: LoadOptions = {}): { config: PretrainedConfig; source: TensorSource } {
    return openMetaCkpt(dir, o);
  }

  static fromMetaCkpt(dir: string, o: LoadOptions = {}): LlamaForCausalLM {
    const { config, source } = LlamaForCausalLM.openMetaCkpt(dir, o);
    try {
      return LlamaForCausalLM.fromSource(source, config, o.rank ?? 0, o);
    } finally {
      source.close();
    }
  }

  /** The full model of a TensorRT-LLM checkpoint, re-targeted to `o.mapping` / `o.dtype` when given. */
  static openCheckpoint(dir: string, o: LoadOptions = {}): { config: PretrainedConfig; source: TensorSource } {
    return openCheckpoint(dir, o);
  }

  /**
   * One rank of a TensorRT-LLM checkpoint. With `o.mapping` of another tp, the checkpoint is resharded
   * (each tensor gathered from every rank file, then cut again).
   */
  static fromCheckpoint(dir: string, rank = 0, o: Omit<LoadOptions, 'rank'> = {}): LlamaForCausalLM {
    checkDir(dir, 'checkpoint');
    const onDisk = readTllmConfig(dir);
    const want = o.mapping && normalizeMapping(o.mapping);
    const same = (!want || (want.tp_size === onDisk.mapping.tp_size && want.pp_size === onDisk.mapping.pp_size)) &&
      (!o.dtype || o.dtype === onDisk.dtype);
    if (same) {
      const model = new LlamaForCausalLM(onDisk, rank);
      if (rank < 0 || rank >= onDisk.mapping.world_size) throw new InputError(`${dir}: rank ${rank} is outside world_size ${onDisk.mapping.world_size}`);
      model.load(readSafetensors(rankFile(dir, rank)), rankFile(dir, rank));
      return model;
    }
    const { config, source } = LlamaForCausalLM.openCheckpoint(dir, o);
    try {
      return LlamaForCausalLM.fromSource(source, config, rank, o);
    } finally {
      source.close();
    }
  }

  /**
   * What can be checked of a TensorRT-LLM checkpoint without reading its weights: config.json, the mapping
   * against the heads and layers, every rank file's header (each rank's tensors, their byte counts and
   * float shards' shapes, as fromCheckpoint's load() checks them) and its quantization's layout. Returns the
   * config; a one-line InputError naming the file and tensor otherwise.
   */
  static checkCheckpoint(dir: string): PretrainedConfig {
    checkDir(dir, 'checkpoint');
    // Opening it checks the config, the mapping, the rank files' names and the quantization's layout.
    const { config, source } = openCheckpoint(dir);
    source.close();
    for (let r = 0; r < config.mapping.world_size; r++) {
      const f = SafetensorsFile.open(rankFile(dir, r));
      try {
        new LlamaForCausalLM(config, r).checkShard(f.tensors, f.file);
      } finally {
        f.close();
      }
    }
    return config;
  }

  /**
   * Replaces the weights, checking every tensor's byte count and, for float tensors, that its shape is
   * this rank's shard of the shape the config implies. `where` names the source in errors.
   */
  load(weights: Weights, where = `rank ${this.rank}`): void {
    this.checkShard(new Map([...weights].map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, nbytes: t.data.length }])), where);
    this.weights = weights;
  }

  /**
   * load()'s checks on a description of the tensors (a rank file's header, say): this rank's names, byte
   * counts, and float shards' shapes. Throws a one-line InputError naming `where` and the tensor.
   */
  checkShard(tensors: ReadonlyMap<string, { dtype: DType; shape: number[]; nbytes: number }>, where = `rank ${this.rank}`): void {
    const ctx = shardContext(this.config);
    const m = this.config.mapping;
    const tpRank = this.rank % m.tp_size;
    // A pipeline stage holds its own layers (renumbered from 0) and the ends of the model it owns.
    const expected = stageTensors(llamaTensorNames(this.config.num_hidden_layers), this.config.num_hidden_layers, m.pp_size, Math.floor(this.rank / m.tp_size)).map(([l]) => l);
    const stage = m.pp_size > 1 ? ` (pp stage ${Math.floor(this.rank / m.tp_size)} of ${m.pp_size})` : '';
    for (const name of expected) {
      if (!tensors.has(name)) throw new InputError(`${where}: missing tensor ${name}${stage}`);
    }
    {
      // Layers or model ends this stage does not own: a rank file written for another pp.
      const layers = new Set(expected.map((n) => /^transformer\.layers\.\d+\./.exec(n)?.[0] ?? n.replace(/\.[^.]*$/, '')));
      for (const name of tensors.keys()) {
        const base = /^transformer\.layers\.\d+\./.exec(name)?.[0] ?? name.replace(/\.[^.]*$/, '');
        if (!layers.has(base) && /^(transformer\.layers\.\d+\.|transformer\.vocab_embedding\.|transformer\.ln_f\.|lm_head\.)/.test(name)) {
          throw new InputError(`${where}: unexpected tensor ${name}${stage}: written for another pipeline split (pp_size) than its config says`);
        }
      }
    }
    for (const [name, t] of tensors) {
      if (t.nbytes !== byteSize(t.dtype, t.shape)) {
        throw new InputError(`${where}: tensor ${name} has ${t.nbytes} bytes for ${t.dtype}[${t.shape}]`);
      }
      const full = expectedShape(name, this.config);
      // Quantized weights are packed or scaled differently; their companions are checked by the engine.
      if (!full || !FLOAT_DTYPES.has(t.dtype)) continue;
      const want = shardShape(full, selection(ruleFor(name, full.length, ctx), full, ctx, tpRank));
      if (want.join() !== t.shape.join()) {
        throw new InputError(`${where}: tensor ${name} has shape [${t.shape.join(', ')}], expected [${want.join(', ')}] for rank ${this.rank} of tp=${ctx.tp}`);
      }
    }
  }

  /** Writes config.json (rank 0) and rank{r}.safetensors into dir. */
  saveCheckpoint(dir: string, opts: { saveConfig?: boolean } = {}): void {
    fs.mkdirSync(dir, { recursive: true });
    if (opts.saveConfig ?? this.rank === 0) writeConfig(dir, this.config);
    const specs = [...this.weights].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
    const w = new SafetensorsWriter(rankFile(dir, this.rank), specs);
    try {
      for (const [name, t] of this.weights) w.write(name, t);
      w.close();
    } catch (e) {
      w.abort();
      throw e;
    }
  }

  tensor(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new InputError(`rank ${this.rank}: missing tensor ${name}`);
    return t;
  }
}

