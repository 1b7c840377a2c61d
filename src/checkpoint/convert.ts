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
import { ioStats, type RawRange } from './ranged.js';
import { type ColumnCut, cutBytes } from './mapped-cols.js';
import { pipeShards, planRank, rankSource, type PlanEntry } from './shard.js';
import type { TensorSource } from './source.js';
import { checkOutDir, commitTemp, discardTemp, openTemp, releaseTemp, tempSibling, withPath } from './outdir.js';
import type { FloatDType } from './hf-config.js';
import { progress } from '../util/progress.js';
import { traceSpan } from '../util/trace.js';
import { workerEnv, workerThreads } from '../util/threads.js';
import { Worker } from 'node:worker_threads';
import type { ConvertWorkerMessage } from './convert-worker.js';
import { onOff } from '../util/env.js';

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
  /** The process that wrote this rank's file (one process writes them all when convert runs alone). */
  pid: number;
  /** Its thread there: 0 the main thread, else the worker thread's id (convert alone, several cores). */
  thread?: number;
  /** Threads that wrote that process's rank files at once (convert alone: util/threads.ts's rule, as it
   *  ran; absent: 1, the main thread). What `tprun bench convert` and `bench build` report. */
  threads?: number;
  /** Bytes of its file copied from the checkpoint inside the kernel (convert alone: kernel-copy.ts). */
  bytesCopied?: number;
  seconds: number;
  bytesWritten: number;
  maxRssBytes: number;
  bytesRead: number;
}

/** What writing one rank's file needs besides the source: progress, cancellation, read accounting. */
export interface RankFileOptions {
  clamp?: boolean;
  onTensor: (bytes: number) => void;
  /** Set when another rank of the same process failed: stop at the next chunk. */
  signal?: { aborted: boolean };
  /** Checkpoint bytes read for this rank (its reads are synchronous, so the global counter's delta). */
  onRead?: (bytes: number) => void;
  /** Bytes of this rank's file copied from the checkpoint inside the kernel (kernel-copy.ts). */
  onCopied?: (bytes: number) => void;
}

/** Rank `rank`'s view of the source and its plan over it, made once: callers count its tensors, writeRankFile writes them. */
export function rankWork(full: TensorSource, config: PretrainedConfig, rank: number): { rank: number; source: TensorSource; plan: PlanEntry[] } {
  const source = rankSource(full, config, rank);
  return { rank, source, plan: planRank(source, config, rank) };
}

/** Rank `w.rank`'s shard, tensor by tensor, into rank{r}.safetensors of `tmp`. */
export async function writeRankFile(tmp: string, w: ReturnType<typeof rankWork>, o: RankFileOptions): Promise<number> {
  const { rank, source, plan } = w;
  const writer = new SafetensorsWriter(rankFile(tmp, rank), plan);
  try {
    await traceSpan('convert.rank', () => pipeShards(source, plan, (name, data, offset) => writer.writeChunk(name, data, offset), {
      clamp: o.clamp, signal: o.signal, onRead: o.onRead, onTensor: (_name, n) => o.onTensor(n),
      // Kernel copies on libuv's pool: where one thread interleaves several ranks' files (rankPipelines),
      // their copies run at once, on as many threads as files (kernel-copy.ts copyRangeAsync).
      // TPRUN_COPY_ASYNC=0: each copy on this thread, synchronously (the path before; benchmarks compare).
      ...(!onOff('TPRUN_COPY_ASYNC')
        ? {
          copy: (name: string, ranges: RawRange[], offset: number) => {
            const n = writer.copyChunk(name, ranges, offset);
            o.onCopied?.(n);
          },
        }
        : {
          copyAsync: async (name: string, ranges: RawRange[], offset: number) => {
            const n = await writer.copyChunkAsync(name, ranges, offset);
            o.onCopied?.(n);
            return ranges.reduce((a, r) => a + r.len, 0);
          },
          copyColsAsync: async (name: string, cuts: ColumnCut[], offset: number) => {
            const n = await writer.copyColumnsAsync(name, cuts, offset);
            o.onCopied?.(n);
            return cuts.reduce((a, c) => a + cutBytes(c), 0);
          },
        }),
      copyCols: (name, cuts, offset) => {
        const n = writer.copyColumns(name, cuts, offset);
        o.onCopied?.(n);
      },
    }), { rank, tensors: plan.length });
    writer.close();
  } catch (e) {
    writer.abort();
    throw withPath(e, writer.file);
  }
  return plan.length;
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
    try {
      const work = rankWork(full, config, world.rank);
      const bar = progress('convert', work.plan.length, 'tensors');
      await writeRankFile(tmp, work, { clamp: o.clamp, onTensor: (k) => { bytes += k; bar.tick(); } });
      bar.done();
      if (world.rank === 0) writeConfig(tmp, config);
    } finally {
      full.close();
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
  return { rank: world.rank, pid: process.pid, thread: 0, seconds: (performance.now() - t0) / 1000, bytesWritten: bytes, maxRssBytes: process.resourceUsage().maxRSS * 1024, bytesRead: ioStats.bytesRead - read0 };
}

/**
 * The ranks' pipelines interleaved on this thread: each reads synchronously and writes on libuv's pool,
 * so one rank's writes overlap the next chunk's reads of any rank. Resolves with the first failure.
 */
async function rankPipelines(tmp: string, works: ReturnType<typeof rankWork>[], stats: RankStats[], o: ConvertOptions, bar: { tick(k?: number): void }, t0: number): Promise<unknown> {
  const signal = { aborted: false };
  let failure: unknown;
  const runs = stats.map((s, i) => writeRankFile(tmp, works[i], {
    clamp: o.clamp, signal,
    onTensor: (k) => { s.bytesWritten += k; bar.tick(); },
    onRead: (k) => { s.bytesRead += k; },
    onCopied: (k) => { s.bytesCopied = (s.bytesCopied ?? 0) + k; },
  }).then(() => { s.seconds = (performance.now() - t0) / 1000; }, (e) => {
    // The first failure is the one reported; the others stop because of it.
    if (signal.aborted) return;
    signal.aborted = true;
    failure = rankError(e, s.rank, stats.length);
  }));
  // Every pipeline has stopped (no write in flight) before the directory is removed or renamed.
  await Promise.all(runs);
  return failure;
}

const rankError = (e: unknown, rank: number, n: number) => (isInputError(e) && n > 1 ? new InputError(`rank ${rank}: ${e.message}`) : e);

/**
 * Each rank's file on a worker thread of its own (convert-worker.ts), at most `threads` at once: reads,
 * casts and writes of different files run in parallel. Resolves with the first failure, once every
 * thread has ended (no write in flight).
 */
function rankThreads(o: ConvertOptions, tmp: string, stats: RankStats[], threads: number, bar: { tick(k?: number): void }, t0: number): Promise<unknown> {
  return new Promise((resolve) => {
    let next = 0;
    let failure: unknown;
    const live = new Set<Worker>();
    // Read by every worker before each chunk (convert-worker.ts).
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const fail = (e: unknown, rank: number) => {
      if (failure) return;
      failure = rankError(e, rank, stats.length);
      Atomics.store(stop, 0, 1);
    };
    const start = (): void => {
      if (failure || next >= stats.length) {
        if (live.size === 0) resolve(failure);
        return;
      }
      const s = stats[next++];
      const w = new Worker(new URL('./convert-worker.js', import.meta.url), { workerData: { o, tmp, rank: s.rank, stop }, env: workerEnv() });
      live.add(w);
      s.thread = w.threadId;
      let ended = false;
      w.on('message', (m: ConvertWorkerMessage) => {
        if (m.kind === 'tensor') {
          s.bytesWritten += m.bytes;
          bar.tick();
        } else if (m.kind === 'done') {
          ended = true;
          s.bytesRead = m.bytesRead;
          s.bytesCopied = m.bytesCopied;
          s.seconds = (performance.now() - t0) / 1000;
        } else {
          ended = true;
          if (process.env.TPRUN_DEBUG && m.stack) process.stderr.write(`${m.stack}\n`);
          fail(m.input ? new InputError(m.message) : new Error(m.message), s.rank);
        }
      });
      w.on('error', (e) => { ended = true; fail(e, s.rank); });
      w.on('exit', (code) => {
        live.delete(w);
        if (!ended) fail(new Error(`rank ${s.rank}: its conversion thread exited (code ${code})`), s.rank);
        start();
      });
    };
    for (let i = 0; i < threads; i++) start();
  });
}

/**
 * Every rank's file in this one process, for a `tprun convert` that runs alone (no world of ranks to
 * join): the same files, byte for byte, as tp × pp rank processes would write, without starting them
 * (process start-up and rendezvous cost more than a rank's conversion; issue #14). The ranks run on
 * worker threads where cores allow (util/threads.ts: TPRUN_BUILD_THREADS, else one per rank from 4 cores
 * up), else interleaved on this one.
 */
export async function convertLocal(o: ConvertOptions): Promise<RankStats[]> {
  const n = o.tp * (o.pp ?? 1);
  const t0 = performance.now();
  const tmp = tempSibling(o.out, `${process.pid.toString(36)}${Date.now().toString(36)}`);
  const stats: RankStats[] = [...Array(n).keys()].map((rank) => ({ rank, pid: process.pid, thread: 0, seconds: 0, bytesWritten: 0, maxRssBytes: 0, bytesRead: 0 }));
  checkOutDir(o.out, o);
  openTemp(tmp);
  try {
    const { config, source: full } = openSource(o);
    try {
      const works = stats.map((s) => rankWork(full, config, s.rank));
      const bar = progress('convert', works.reduce((a, w) => a + w.plan.length, 0), 'tensors');
      const threads = Math.min(workerThreads(), n);
      const onWorkers = threads >= 2;
      for (const s of stats) s.threads = onWorkers ? threads : 1;
      const runs = onWorkers ? rankThreads(o, tmp, stats, threads, bar, t0) : rankPipelines(tmp, works, stats, o, bar, t0);
      const failure = await runs;
      if (failure) throw failure;
      bar.done();
      writeConfig(tmp, config);
    } finally {
      full.close();
    }
    commitTemp(tmp, o.out, o);
  } catch (e) {
    discardTemp(tmp);
    throw e;
  }
  const rss = process.resourceUsage().maxRSS * 1024;
  for (const s of stats) s.maxRssBytes = rss;
  return stats;
}
