// An engine: per-rank ONNX segment graphs + one weight file per rank, and the directory that holds them.
//
//   ENGINE/config.json            {version, pretrained_config, build_config, tp_size, pp_size, segments}  (rank 0)
//                                 (segments: rank 0's count; with pp, a stage's count is in its manifest)
//   ENGINE/rank{r}/seg{i}.onnx    segment graphs of rank r (weights as external data)
//   ENGINE/rank{r}/weights.bin    rank r's weights, 64 KiB aligned
//   ENGINE/rank{r}/manifest.json  sizes and CRC-32 of rank r's files (damage detection; checksum.ts)

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile as writeFileRaw } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { PretrainedConfig } from '../core/config.js';
import type { Weights } from '../core/tensor.js';
import type { World } from '../rank/types.js';
import { InputError } from '../core/errors.js';
import { PRODUCER, checkOutDir, commitTemp, discardTemp, openTemp, releaseTemp, withPath, type OutGuard } from '../checkpoint/outdir.js';
import { lmHeadBlockFor, prefillInt8GemmRefusal, resolveBuildConfig, resolveLmHeadQuant, type BuildConfig } from './build-config.js';
import { buildLlamaSegments } from './llama-graph.js';
import { isQuantizedLinear, loadQuantLinear } from './linear.js';
import { WeightFile } from './weight-file.js';
import { fileChecksum, recordedAlgo, sumOf, type FileSum } from './checksum.js';
import { traceSpan } from '../util/trace.js';

export const ENGINE_VERSION = 1;
const WEIGHTS = 'weights.bin';

export interface EngineConfig {
  version: number;
  producer: string;
  pretrained_config: PretrainedConfig;
  build_config: BuildConfig;
  tp_size: number;
  /** Pipeline stages (absent in engines written before pp: 1). The engine runs on tp_size × pp_size ranks. */
  pp_size?: number;
  segments: number;
}

export interface Manifest {
  rank: number;
  files: Record<string, FileSum>;
  /** Tensor bytes in weights.bin (without alignment padding), and of those the embedding table's. */
  weight_bytes?: number;
  embedding_bytes?: number;
}

/** What build() needs of a model: LlamaForCausalLM satisfies it. */
export interface ModelShard { config: PretrainedConfig; rank: number; weights: Weights }

/** A segment graph's ONNX bytes, or how to make them (encoded as the engine is written). */
export type SegmentBytes = Uint8Array | (() => Uint8Array);

export class Engine {
  private constructor(
    readonly config: EngineConfig,
    readonly rank: number,
    /** Set once the engine lives on disk. */
    public dir: string | undefined,
    private built?: { graphs: SegmentBytes[]; weights: WeightFile; embeddingBytes: number },
    /** Set for engines opened from disk. */
    readonly manifest?: Manifest,
  ) {}

  get tp(): number { return this.config.tp_size; }
  get pp(): number { return this.config.pp_size ?? 1; }
  get worldSize(): number { return this.tp * this.pp; }
  /** Bytes of this rank's weights (what monitoring reports as the engine's size on its device). */
  get weightBytes(): number { return this.manifest?.weight_bytes ?? this.manifest?.files['weights.bin']?.size ?? 0; }
  /** This rank's segment count (pipeline stages differ in layers, so in segments). */
  get segmentCount(): number {
    if (this.built) return this.built.graphs.length;
    return Object.keys(this.manifest?.files ?? {}).filter((f) => /^seg\d+\.onnx$/.test(f)).length;
  }

  static fromBuilt(config: EngineConfig, rank: number, graphs: SegmentBytes[], weights: WeightFile, embeddingBytes = 0): Engine {
    return new Engine(config, rank, undefined, { graphs, weights, embeddingBytes });
  }

  segmentPath(i: number): string {
    if (!this.dir) throw new Error('engine is not saved yet: call save(dir) first');
    return join(this.dir, `rank${this.rank}`, `seg${i}.onnx`);
  }

  /**
   * Writes the engine. Alone (no world, or a size-1 world): to a temp sibling, renamed when complete.
   * With a world: every rank writes its part into the job's temp sibling; rank 0 adds config.json (and
   * `extraFiles`, e.g. the tokenizer) and renames it. No shared filesystem is assumed: on a node that cannot
   * see rank 0's files, the node's first rank adds them (sent over the world) and renames its own copy.
   * An existing `dir` is replaced only if empty or written by tprun, or with `guard.force` (outdir.ts).
   */
  async save(dir: string, world?: World, extraFiles: Record<string, Uint8Array> = {}, guard: OutGuard = {}): Promise<void> {
    if (!this.built) throw new Error('engine was loaded from disk; nothing to save');
    const tp = this.worldSize;
    if (world && world.size !== tp) throw new Error(`engine has ${tp} ranks but the world has ${world.size}`);
    if (!world && tp > 1) throw new Error(`saving a ${tp}-rank engine needs the world of its ranks`);
    // A job-unique temporary sibling, so a stale one can never pass for rank 0's on a node of its own.
    const tag = randomBytes(6).toString('hex');
    const tmp = join(dirname(dir), `.${basename(dir)}.partial-${world ? await world.broadcastObject(this.rank === 0 ? tag : undefined, 0) : tag}`);
    // Ranks on a node that does not share rank 0's filesystem finish their own copy of the directory, so
    // rank 0's extra files (the tokenizer) travel over the world rather than through a shared disk.
    const extras = world ? await world.broadcastObject(this.rank === 0 ? extraFiles : undefined, 0) : extraFiles;
    try {
      checkOutDir(dir, guard); // before any work; commitTemp checks again where each copy is renamed
      openTemp(tmp); // removed on failure, exit or SIGTERM (how the launcher stops the other ranks)
      await this.writeRank(tmp, dir, world, extras, guard);
    } catch (e) {
      discardTemp(tmp); // no half-written engine left behind
      throw e;
    }
    this.dir = dir;
  }

  private async writeRank(tmp: string, dir: string, world: World | undefined, extraFiles: Record<string, Uint8Array>, guard: OutGuard): Promise<void> {
    if (!this.built) throw new Error('nothing to write');
    // Write errors (ENOSPC, EIO) name the file, which node's own messages do not.
    const writeFile = (file: string, data: Uint8Array | string) => writeFileRaw(file, data).catch((e) => { throw withPath(e, file); });
    const rdir = join(tmp, `rank${this.rank}`);
    await mkdir(rdir, { recursive: true });
    const files: Manifest['files'] = {};
    const wpath = join(rdir, WEIGHTS);
    // The weight file first: once its workers have their jobs, this thread (idle while they convert and
    // write) encodes and writes the segment graphs, which were on the critical path before the weights
    // (the ONNX encoding of a 1.1B-shape graph ≈ 0.1 s of a 2-core machine's build; issue #14).
    let started!: () => void;
    const handed = new Promise<void>((resolve) => { started = resolve; });
    const giveUp = new AbortController();
    const weights = this.built.weights.write(wpath, { onStarted: started, signal: giveUp.signal }).catch((e) => { throw withPath(e, wpath); });
    let failed = false;
    await Promise.race([handed, weights.then(() => undefined, () => { failed = true; })]);
    const segs: Manifest['files'] = {};
    const graphs = this.built.graphs;
    try {
      if (!failed) {
        await traceSpan('segments.write', async () => {
          for (let i = 0; i < graphs.length; i++) {
            const g = graphs[i];
            const bytes = typeof g === 'function' ? g() : g;
            await writeFile(join(rdir, `seg${i}.onnx`), bytes);
            segs[`seg${i}.onnx`] = sumOf(bytes);
          }
        });
      }
    } catch (e) {
      // The weight file settles first (its workers and descriptor closed) before the temp directory goes;
      // its workers are stopped rather than left to write the whole file for nothing.
      giveUp.abort(e);
      await weights.catch(() => undefined);
      throw e;
    }
    const crc32 = await weights;
    // In the manifest's order as before: the segments, then the weights.
    Object.assign(files, segs);
    files[WEIGHTS] = { size: this.built.weights.size, crc32 };
    const manifest: Manifest = { rank: this.rank, files, weight_bytes: this.built.weights.dataBytes, embedding_bytes: this.built.embeddingBytes };
    await writeFile(join(rdir, 'manifest.json'), JSON.stringify(manifest, null, 1));
    const finish = async () => {
      for (const [name, bytes] of Object.entries(extraFiles)) await writeFile(join(tmp, name), bytes);
      await writeFile(join(tmp, 'config.json'), JSON.stringify(this.config, null, 2));
    };
    if (this.rank === 0) await finish();
    if (world) await world.barrier();
    // Rank 0 renames its directory; so does the first rank of every node that cannot see rank 0's config.
    const owns = this.rank === 0 || (world !== undefined && world.localRank === 0 && !existsSync(join(tmp, 'config.json')));
    if (world) await world.barrier(); // every node has looked before anything is renamed
    if (owns) {
      if (this.rank !== 0) await finish();
      commitTemp(tmp, dir, guard);
    } else {
      releaseTemp(tmp);
    }
    if (world) await world.barrier();
  }

  /** Reads and checks ENGINE/config.json (one-line errors naming the file). */
  static async readConfig(dir: string): Promise<EngineConfig> {
    const cfgPath = join(dir, 'config.json');
    if (!existsSync(cfgPath)) throw new InputError(`${cfgPath}: not an engine directory (no config.json)`);
    let config: EngineConfig;
    try {
      config = JSON.parse(await readFile(cfgPath, 'utf8'));
    } catch (e) {
      throw new InputError(`${cfgPath}: unreadable engine config (${(e as Error).message})`);
    }
    const raw = config as unknown as Record<string, unknown>;
    if (raw.build_config === undefined && typeof raw.architecture === 'string' && raw.mapping !== undefined) {
      throw new InputError(`${dir}: a TensorRT-LLM checkpoint, not an engine; build one with: tprun build --checkpoint ${dir} --out ENGINE_DIR`);
    }
    if (raw.build_config === undefined && (raw.model_type !== undefined || Array.isArray(raw.architectures))) {
      throw new InputError(`${dir}: a Hugging Face model, not an engine; build one with: tprun build --model ${dir} --out ENGINE_DIR`);
    }
    if (config.version !== ENGINE_VERSION) throw new InputError(`${cfgPath}: engine version ${config.version}, this tprun reads version ${ENGINE_VERSION}`);
    if (!Number.isInteger(config.tp_size) || !Number.isInteger(config.segments) || !config.pretrained_config || !config.build_config ||
      (config.pp_size !== undefined && !(Number.isInteger(config.pp_size) && config.pp_size >= 1))) {
      throw new InputError(`${cfgPath}: incomplete engine config (damaged engine)`);
    }
    return config;
  }

  /**
   * Every rank's part of a saved engine is there, listed and of its recorded size: what the process that
   * starts the ranks can check without reading the weights (each rank checksums its own files as it opens them).
   */
  static async checkRanks(dir: string, config: EngineConfig): Promise<void> {
    for (let r = 0; r < engineWorldSize(config); r++) await Engine.fromDir(dir, r, { verify: false });
  }

  /** Opens rank `rank`'s part of a saved engine, checking the layout and (by default) every file's checksum. */
  static async fromDir(dir: string, rank: number, opts: { worldSize?: number; verify?: boolean } = {}): Promise<Engine> {
    const config = await Engine.readConfig(dir);
    const ranks = engineWorldSize(config);
    if (opts.worldSize !== undefined && opts.worldSize !== ranks) {
      throw new InputError(`${dir}: engine was built for ${ranks} rank(s) (tp ${config.tp_size} × pp ${config.pp_size ?? 1}) but is run with ${opts.worldSize}`);
    }
    if (rank >= ranks) throw new InputError(`${dir}: engine was built for ${ranks} rank(s); there is no rank ${rank}`);
    const rdir = join(dir, `rank${rank}`);
    const manPath = join(rdir, 'manifest.json');
    let man: Manifest;
    try {
      man = JSON.parse(await readFile(manPath, 'utf8'));
    } catch {
      throw new InputError(`${manPath}: missing or unreadable (damaged engine)`);
    }
    for (const [file, want] of Object.entries(man.files)) {
      const p = join(rdir, file);
      const st = await stat(p).catch(() => undefined);
      if (!st) throw new InputError(`${p}: missing (damaged engine)`);
      if (st.size !== want.size) throw new InputError(`${p}: ${st.size} bytes, expected ${want.size} (damaged engine)`);
      if (opts.verify !== false) {
        const algo = recordedAlgo(want);
        if (!algo) throw new InputError(`${manPath}: no checksum for ${file} (damaged engine)`);
        if (await fileChecksum(p, algo) !== want[algo]) throw new InputError(`${p}: checksum mismatch (damaged engine)`);
      }
    }
    const nseg = rank === 0 ? config.segments : Object.keys(man.files).filter((f) => /^seg\d+\.onnx$/.test(f)).length;
    for (let i = 0; i < nseg; i++) {
      if (!man.files[`seg${i}.onnx`]) throw new InputError(`${manPath}: segment seg${i}.onnx not listed (damaged engine)`);
    }
    return new Engine(config, rank, dir, undefined, man);
  }
}

/** Ranks an engine runs on: tp_size × pp_size (TensorRT-LLM's world_size). */
export function engineWorldSize(config: EngineConfig): number {
  return config.tp_size * (config.pp_size ?? 1);
}

/**
 * Why a model cannot be built for sequences of `maxSeqLen`, or undefined. Positions past what it was
 * trained on give garbage without rope scaling (TensorRT-LLM's build caps max_seq_len at
 * max_position_embeddings × the scaling factor the same way).
 */
export function maxSeqLenRefusal(maxSeqLen: number, cfg: Pick<PretrainedConfig, 'max_position_embeddings' | 'rotary_scaling'>): string | undefined {
  const scale = cfg.rotary_scaling?.factor ?? 1;
  if (maxSeqLen <= cfg.max_position_embeddings * scale) return undefined;
  return `--max-seq-len ${maxSeqLen} exceeds the model's ${cfg.max_position_embeddings} positions${scale !== 1 ? ` × rope scaling factor ${scale}` : ' (it has no rope scaling)'}`;
}

/** Builds rank `model.rank`'s engine from its shard (float or quantized weights). */
export async function build(model: ModelShard, buildConfig: Partial<BuildConfig> = {}, opts: { onLayer?: () => void } = {}): Promise<Engine> {
  const cfg = model.config;
  const bc = resolveLmHeadQuant(resolveBuildConfig(buildConfig), cfg.quantization?.quant_algo);
  // Refused, not recorded in build_config, where it would build nothing (`tprun build` refuses it earlier).
  const pig = bc.prefill_int8_gemm ? prefillInt8GemmRefusal(bc, cfg.quantization?.quant_algo) : undefined;
  if (pig) throw new InputError(pig);
  // The engine's config records the lm_head's block as built, not as asked: a hidden size that 256 does
  // not divide takes a smaller block, and one no block fits keeps a float lm_head (emitLmHead).
  if (bc.lm_head_quant !== 'none') {
    const bs = lmHeadBlockFor(cfg.hidden_size, bc.lm_head_block_size);
    if (bs === undefined) bc.lm_head_quant = 'none';
    else bc.lm_head_block_size = bs;
  }
  const long = maxSeqLenRefusal(bc.max_seq_len, cfg);
  if (long) throw new InputError(long);
  const prefixes = [...model.weights.keys()].filter((k) => k.endsWith('.weight')).map((k) => k.slice(0, -'.weight'.length));
  if (bc.lm_head_quant !== 'none' || prefixes.some((p) => isQuantizedLinear(p, model.weights, cfg.quantization))) await loadQuantLinear();
  const wf = new WeightFile(WEIGHTS);
  const graphs = buildLlamaSegments(cfg, model.rank, model.weights, bc, wf, opts.onLayer);
  const config: EngineConfig = {
    version: ENGINE_VERSION,
    producer: PRODUCER, // also what lets a later build replace this directory
    pretrained_config: cfg,
    build_config: bc,
    tp_size: cfg.mapping.tp_size,
    pp_size: cfg.mapping.pp_size,
    segments: graphs.length,
  };
  // Encoded when written, while the weight file's workers run (writeRank).
  const encoded = graphs.map((g) => () => g.encode({ tprun_rank: String(model.rank) }));
  const emb = model.weights.get('transformer.vocab_embedding.weight');
  const embBytes = emb ? emb.shape.reduce((a, b) => a * b, 1) * (bc.dtype === 'float32' ? 4 : 2) : 0;
  return Engine.fromBuilt(config, model.rank, encoded, wf, embBytes);
}
