// Only rank 0 quantizes: it reads the model, calibrates, quantizes the full (tp=1) weights, cuts every
// rank's shard with the one sharding table and sends it over the world as raw frames. For an engine,
// W8A16/W4A16 float weights (quantized at load in TensorRT-LLM) are quantized there too, per shard. Other ranks never
// open the model; they wait on their socket (no polling loop of their own) in a visible
// "waiting for rank 0" state, then receive. No shared filesystem is assumed.

import { InputError, isInputError } from '../core/errors.js';
import { commitTemp, discardTemp, openTemp, releaseTemp, tempSibling } from '../checkpoint/outdir.js';
import { openSource, type ConvertOptions } from '../checkpoint/convert.js';
import type { FloatDType } from '../checkpoint/hf-config.js';
import { shardContext } from '../checkpoint/shard.js';
import type { DType, Tensor, Weights } from '../core/tensor.js';
import type { PretrainedConfig } from '../core/config.js';
import { LlamaForCausalLM } from '../model/llama.js';
import type { World } from '../rank/types.js';
import { shardTensor } from '../sharding/slice.js';
import { stageTensors } from '../sharding/mapping.js';
import { kPerRank } from '../sharding/tllm-layout.js';
import { progress } from '../util/progress.js';
import { traceSpan } from '../util/trace.js';
import { needsCalibration } from './algorithms.js';
import type { CalibrationStats } from './calib-stats.js';
import type { QuantRequest } from './algorithms.js';
import { quantizeWeights, type QuantReport } from './quantize-model.js';
import { quantizeWeightOnlyShard, weightOnlyBits } from './weight-only.js';

const TAG = 0x51000;
/** Rank 0 may calibrate and search for minutes; the launcher takes the job down if it dies. */
const WAIT_MS = 24 * 3600 * 1000;

export interface QuantizeSource {
  /** Model directory (Hugging Face, Meta or TensorRT-LLM checkpoint); read by rank 0 only. */
  model: string;
  format?: ConvertOptions['format'];
  /** Dtype of the tensors left in float (embedding, norms, lm_head); default the source's. */
  dtype?: FloatDType;
  /** Directory with tokenizer.json for the calibration text (default: the model directory). */
  tokenizer?: string;
  useParallelEmbedding?: boolean;
  embeddingShardingDim?: 0 | 1;
  /** Pipeline stages (default 1): the world has tp × pp ranks, and each stage gets only its layers. */
  pp?: number;
  /**
   * The shards feed an engine build: W8A16/W4A16's float weights are quantized too (on rank 0, per
   * shard, weight-only.ts), where TensorRT-LLM's loader would. A checkpoint keeps them float.
   */
  forEngine?: boolean;
}

interface Header {
  error?: string;
  inputError?: boolean;
  config?: PretrainedConfig;
  tensors?: { name: string; dtype: DType; shape: number[]; bytes: number }[];
}

/** Rank 0: the full model quantized (tp=1 layout), with the config it will be sharded under. */
export async function quantizeFullModel(src: QuantizeSource, q: QuantRequest, tp: number, pp = 1): Promise<{ config: PretrainedConfig; weights: Weights; report: QuantReport[] }> {
  const { config, source } = openSource({
    model: src.model, out: '', tp: 1, dtype: src.dtype, format: src.format,
    useParallelEmbedding: src.useParallelEmbedding, embeddingShardingDim: src.embeddingShardingDim,
  });
  let full: LlamaForCausalLM;
  try {
    full = await traceSpan('quant.load', () => LlamaForCausalLM.fromSource(source, config, 0));
  } finally {
    source.close();
  }
  const target: PretrainedConfig = { ...config, mapping: { world_size: tp * pp, tp_size: tp, pp_size: pp } };
  shardContext(target); // tp against heads, before minutes of calibration
  checkGroups(target, q);
  let stats: CalibrationStats | undefined;
  if (needsCalibration(q)) {
    // The calibration engine (onnxruntime) is loaded only when an algorithm calibrates.
    const { calibrate } = await import('./calibrate.js');
    const { loadTokenizer } = await import('../engine/tokenizer.js');
    const tok = loadTokenizer(src.tokenizer ?? src.model);
    stats = await traceSpan('quant.calibrate', () => calibrate(full, tok, {
      file: q.calibFile, samples: q.calibSamples, kvCache: q.kvCache === 'int8',
    }));
  }
  const bar = progress('quantize', config.num_hidden_layers, 'layers');
  const res = await traceSpan('quant.quantize', () => quantizeWeights(config, full.weights, q, stats, () => bar.tick()));
  bar.done();
  return { config: { ...target, quantization: res.quantization }, weights: res.weights, report: res.report };
}

/** Row-parallel linears are cut along K: each rank's part must hold whole int4 groups. */
export function checkGroups(c: PretrainedConfig, q: QuantRequest): void {
  if (q.algo !== 'int4_wo' && q.algo !== 'int4_awq' && q.algo !== 'w4a8_awq') return;
  const g = q.groupSize ?? 128;
  const tp = c.mapping.tp_size;
  // The row-parallel linears first: theirs is the share --tp changes, the likelier fault to name.
  const ks = kPerRank(c, tp).sort((a, b) => Number(b.rowParallel) - Number(a.rowParallel));
  for (const { linear, perRank } of ks) {
    if (perRank % g !== 0) throw new InputError(`--group-size ${g}: ${linear} has ${perRank} input features per rank at tp=${tp}, not a multiple of the group size`);
  }
}

/** The rank's quantized shard (every rank calls this; only rank 0 touches `src`). */
export async function quantizeAndDistribute(world: World, src: QuantizeSource, q: QuantRequest): Promise<LlamaForCausalLM> {
  const pp = src.pp ?? 1;
  const tp = world.size / pp;
  if (world.rank !== 0) return receiveShard(world);
  let full: Awaited<ReturnType<typeof quantizeFullModel>>;
  try {
    if (!Number.isInteger(tp)) throw new InputError(`--pp ${pp} does not divide the world's ${world.size} ranks`);
    full = await quantizeFullModel(src, q, tp, pp);
  } catch (e) {
    await failWaiting(world, e);
    throw e;
  }
  const ctx = shardContext(full.config);
  const bits = src.forEngine ? weightOnlyBits(full.config.quantization?.quant_algo) : undefined;
  return sendShards(world, full.config, (r) => {
    const shard: Weights = new Map();
    // Rank r = pp_rank × tp + tp_rank: its stage's tensors (layers renumbered from 0), cut for its tp rank.
    const weightsOf = new Map(stageTensors([...full.weights.keys()], full.config.num_hidden_layers, pp, Math.floor(r / tp)));
    for (const [local, name] of weightsOf) shard.set(local, shardTensor(name, full.weights.get(name)!, ctx, r % tp));
    return bits ? quantizeWeightOnlyShard(shard, bits) : shard;
  });
}

/**
 * `build --checkpoint` of a W8A16 / W4A16 checkpoint (float weights, quantized at load): rank 0 reads
 * every rank's shard, quantizes it per channel as TensorRT-LLM's loader would on that rank, and sends it;
 * the other ranks only receive.
 */
export async function loadWeightOnlyAndDistribute(world: World, dir: string): Promise<LlamaForCausalLM> {
  if (world.rank !== 0) return receiveShard(world);
  let opened: ReturnType<typeof LlamaForCausalLM.openCheckpoint>;
  let bits: 8 | 4;
  try {
    // Opening validates the whole checkpoint against the layout table (int8 weights here exit 2).
    opened = LlamaForCausalLM.openCheckpoint(dir);
    const algo = opened.config.quantization?.quant_algo;
    const b = weightOnlyBits(algo);
    if (!b) throw new Error(`${dir}: quant_algo ${algo} is not a weight-only algorithm quantized at load`);
    bits = b;
    if (opened.config.mapping.world_size !== world.size) throw new InputError(`${dir}: written for ${opened.config.mapping.world_size} rank(s), the world has ${world.size}`);
  } catch (e) {
    await failWaiting(world, e);
    throw e;
  }
  const { config, source } = opened;
  try {
    return await sendShards(world, config, (r) => quantizeWeightOnlyShard(LlamaForCausalLM.fromSource(source, config, r).weights, bits));
  } finally {
    source.close();
  }
}

/** Rank 0 failed before sending: tell the waiting ranks why, so that every rank fails with its message. */
async function failWaiting(world: World, e: unknown): Promise<void> {
  const msg = (e as Error).message ?? String(e);
  for (let r = 1; r < world.size; r++) await world.sendObject({ error: msg, inputError: isInputError(e) } satisfies Header, r, TAG);
}

/** Rank 0: sends rank r its shard (made one at a time, so only one extra shard is held); returns rank 0's own. */
async function sendShards(world: World, config: PretrainedConfig, shardOf: (r: number) => Weights): Promise<LlamaForCausalLM> {
  let mine: Weights | undefined;
  const bar = progress('send shards', world.size - 1, 'ranks');
  for (let r = 0; r < world.size; r++) {
    let shard: Weights;
    try {
      shard = shardOf(r);
    } catch (e) {
      // Ranks not yet served are still waiting for their header.
      for (let w = Math.max(r, 1); w < world.size; w++) await world.sendObject({ error: (e as Error).message ?? String(e), inputError: isInputError(e) } satisfies Header, w, TAG);
      throw e;
    }
    if (r === 0) { mine = shard; continue; }
    const tensors = [...shard].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: t.data.length }));
    await traceSpan('quant.send', async () => {
      await world.sendObject({ config, tensors } satisfies Header, r, TAG);
      for (const t of shard.values()) await world.send(t.data, r, TAG + 1);
    }, { rank: r, tensors: tensors.length });
    bar.tick();
  }
  bar.done();
  const model = new LlamaForCausalLM(config, 0);
  model.load(mine!);
  return model;
}

async function receiveShard(world: World): Promise<LlamaForCausalLM> {
  const wait = progress('waiting for rank 0', 1, 'shard');
  const h = await traceSpan('quant.wait', () => world.recvObject<Header>(0, TAG, { timeoutMs: WAIT_MS }));
  wait.done();
  if (h.error) throw h.inputError ? new InputError(`rank 0: ${h.error}`) : new Error(`rank 0 failed to quantize: ${h.error}`);
  const weights: Weights = new Map();
  const bar = progress('receive shard', h.tensors!.length, 'tensors');
  await traceSpan('quant.recv', async () => {
    for (const m of h.tensors!) {
      const data = await world.recv(0, TAG + 1, new Uint8Array(m.bytes));
      weights.set(m.name, { dtype: m.dtype, shape: m.shape, data } satisfies Tensor);
      bar.tick();
    }
  });
  bar.done();
  const model = new LlamaForCausalLM(h.config!, world.rank);
  model.load(weights);
  return model;
}

/** `tprun convert --quant ...`: every rank writes its quantized rank{r}.safetensors into one temp sibling. */
export async function convertQuantized(world: World, o: ConvertOptions, q: QuantRequest): Promise<{ rank: number; seconds: number; bytesWritten: number; maxRssBytes: number }> {
  const t0 = performance.now();
  if (world.size !== o.tp * (o.pp ?? 1)) throw new InputError(`--tp ${o.tp} × --pp ${o.pp ?? 1} but the world has ${world.size} ranks`);
  const tag = await world.broadcastObject(world.rank === 0 ? `${process.pid.toString(36)}${Date.now().toString(36)}` : undefined, 0);
  const tmp = tempSibling(o.out, tag);
  let err: unknown;
  let bytes = 0;
  try {
    const model = await quantizeAndDistribute(world, {
      model: o.model, format: o.format, dtype: o.dtype,
      useParallelEmbedding: o.useParallelEmbedding, embeddingShardingDim: o.embeddingShardingDim, pp: o.pp,
    }, q);
    openTemp(tmp);
    await traceSpan('save', () => model.saveCheckpoint(tmp));
    for (const t of model.weights.values()) bytes += t.data.length;
  } catch (e) {
    err = e;
  }
  const ok = await world.allReduce(Int32Array.of(err ? 0 : 1), 'min');
  if (world.rank === 0) {
    if (ok[0] === 1) commitTemp(tmp, o.out, o);
    else discardTemp(tmp);
  } else {
    releaseTemp(tmp);
  }
  await world.barrier();
  if (err) throw err;
  return { rank: world.rank, seconds: (performance.now() - t0) / 1000, bytesWritten: bytes, maxRssBytes: process.resourceUsage().maxRSS * 1024 };
}
