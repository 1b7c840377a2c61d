// `tprun convert` on one rank: open the source, cut this rank's shard tensor by tensor straight into
// rank{r}.safetensors of a temporary sibling of --out; rank 0 adds config.json and, once every rank has
// reported success, renames the directory into place. Any failure removes the temporary directory.
import fs from 'node:fs';
import path from 'node:path';
import type { World } from '../rank/types.js';
import type { PretrainedConfig } from '../core/config.js';
import { type LoadOptions, openCheckpoint, openHuggingFace, openMetaCkpt } from './open.js';
import { InputError, isInputError } from '../core/errors.js';
import { checkDir, isHfDir } from './hf.js';
import { isTllmDir, rankFile, writeConfig } from './tllm.js';
import { SafetensorsWriter } from './safetensors.js';
import { ioStats } from './ranged.js';
import { pipeShards, planRank, rankSource } from './shard.js';
import type { TensorSource } from './source.js';
import { checkOutDir, commitTemp, discardTemp, openTemp, releaseTemp, tempSibling, withPath } from './outdir.js';
import type { FloatDType } from './hf-config.js';
import { progress } from '../util/progress.js';
import { traceSpan } from '../util/trace.js';

export type SourceFormat = 'auto' | 'hf' | 'meta' | 'tllm';

export interface ConvertOptions {
  model: string;
  out: string;
  tp: number;
  pp?: number;
  dtype?: FloatDType;
  format?: SourceFormat;
  clamp?: boolean;
  useParallelEmbedding?: boolean;
  embeddingShardingDim?: 0 | 1;
  /** Replace an existing --out that tprun did not write (never the cwd, home or the input: outdir.ts). */
  force?: boolean;
}

export function detectFormat(dir: string): Exclude<SourceFormat, 'auto'> {
  checkDir(dir);
  if (isTllmDir(dir)) return 'tllm';
  if (isHfDir(dir)) return 'hf';
  if (fs.existsSync(path.join(dir, 'params.json'))) return 'meta';
  throw new InputError(`--model ${dir}: not a Hugging Face (config.json + *.safetensors), Meta (params.json + consolidated.NN.pth) or TensorRT-LLM (config.json + rank0.safetensors) checkpoint`);
}

/** The full model of --model as TensorRT-LLM tensors, with the target config. */
export function openSource(o: ConvertOptions): { config: PretrainedConfig; source: TensorSource; format: string } {
  if (!Number.isInteger(o.tp) || o.tp < 1) throw new InputError(`--tp ${o.tp}: must be a positive integer`);
  const pp = o.pp ?? 1;
  if (!Number.isInteger(pp) || pp < 1) throw new InputError(`--pp ${pp}: must be a positive integer`);
  const format = !o.format || o.format === 'auto' ? detectFormat(o.model) : o.format;
  const lo: LoadOptions = {
    dtype: o.dtype, mapping: { world_size: o.tp * pp, tp_size: o.tp, pp_size: pp }, clamp: o.clamp,
    useParallelEmbedding: o.useParallelEmbedding, embeddingShardingDim: o.embeddingShardingDim,
  };
  const opened = format === 'hf' ? openHuggingFace(o.model, lo)
    : format === 'meta' ? openMetaCkpt(o.model, lo)
    : openCheckpoint(o.model, lo);
  return { ...opened, format };
}

/** Everything that can be checked before ranks start: options, config, headers, shapes, tp. */
export function validateConvert(o: ConvertOptions): PretrainedConfig {
  checkOutDir(o.out, o);
  const { config, source } = openSource(o);
  try {
    // Every stage's plan: shapes, tp against heads, and pp against the layers are all checked here.
    for (let p = 0; p < config.mapping.pp_size; p++) planRank(rankSource(source, config, p * o.tp), config, p * o.tp);
  } finally {
    source.close();
  }
  return config;
}

export interface RankStats {
  rank: number;
  seconds: number;
  bytesWritten: number;
  maxRssBytes: number;
  bytesRead: number;
}

/** This rank's part of the conversion; world.size must equal tp × pp. */
export async function convertRank(world: World, o: ConvertOptions): Promise<RankStats> {
  const read0 = ioStats.bytesRead;
  const pp = o.pp ?? 1;
  if (world.size !== o.tp * pp) throw new InputError(`--tp ${o.tp} × --pp ${pp} = ${o.tp * pp} ranks but the world has ${world.size}`);
  const tag = await world.broadcastObject(world.rank === 0 ? `${process.pid.toString(36)}${Date.now().toString(36)}` : undefined, 0);
  // Timed from here: every rank has started and joined, so the figure is the conversion itself.
  const t0 = performance.now();
  const tmp = tempSibling(o.out, tag);
  let err: unknown;
  let bytes = 0;
  let openedConfig: PretrainedConfig | undefined;
  try {
    checkOutDir(o.out, o); // again on every rank: ranks on other nodes write their own copy
    openTemp(tmp);
    const { config, source: full } = openSource(o);
    openedConfig = config;
    const source = rankSource(full, config, world.rank);
    try {
      const plan = planRank(source, config, world.rank);
      const bar = progress('convert', plan.length, 'tensors');
      const writer = new SafetensorsWriter(rankFile(tmp, world.rank), plan);
      try {
        await traceSpan('convert.rank', () => pipeShards(source, plan, (name, data, offset) => writer.writeChunk(name, data, offset), {
          clamp: o.clamp,
          onTensor: (_name, n) => { bytes += n; bar.tick(); },
        }), { rank: world.rank, tensors: plan.length });
        writer.close();
      } catch (e) {
        writer.abort();
        throw withPath(e, writer.file);
      }
      bar.done();
      if (world.rank === 0) writeConfig(tmp, config);
    } finally {
      source.close();
    }
  } catch (e) {
    err = isInputError(e) && world.size > 1 ? new InputError(`rank ${world.rank}: ${e.message}`) : e;
  }
  // Every rank learns whether all succeeded before the directory is renamed or removed.
  const ok = await world.allReduce(Int32Array.of(err ? 0 : 1), 'min');
  // Nodes that do not share rank 0's filesystem (no config.json of rank 0 in sight) finish their own
  // copy: the node's first local rank adds config.json and renames. Checked by all before any rename.
  const ownsDir = world.rank === 0 || (world.localRank === 0 && !fs.existsSync(path.join(tmp, 'config.json')));
  await world.barrier();
  if (ownsDir) {
    if (ok[0] !== 1) discardTemp(tmp);
    else {
      if (world.rank !== 0) writeConfig(tmp, openedConfig!);
      commitTemp(tmp, o.out, o);
    }
  } else {
    releaseTemp(tmp);
  }
  await world.barrier();
  if (err) throw err;
  return { rank: world.rank, seconds: (performance.now() - t0) / 1000, bytesWritten: bytes, maxRssBytes: process.resourceUsage().maxRSS * 1024, bytesRead: ioStats.bytesRead - read0 };
}
