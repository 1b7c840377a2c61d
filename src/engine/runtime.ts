// Runs one rank's engine: an ORT session per segment, all-reduce of `partial` between segments,
// all-gather of the vocab-parallel logits, and a KV cache that GroupQueryAttention updates in place
// (the same buffer is fed as past.L.* and bound as present.L.*, so a decode step writes only the new
// token's keys and values).

import ort from './ort.js';
import type { Group, World } from '../rank/types.js';
import { traceSpan } from '../util/trace.js';
import type { Engine } from './engine.js';
import { rankShape, type RankShape } from './llama-graph.js';
import { readFileSync } from 'node:fs';
import { chooseDevice, onnxOutputNames, outputLocations, webgpuEpOptions, type Device, type DeviceRequest } from './device.js';
import { Mapping } from '../sharding/mapping.js';
import { stageGroup } from './stage-comm.js';
import { rankCores } from '../rank/affinity.js';
import { onOff } from '../util/env.js';

export interface RunnerOptions {
  /** Threads for this rank's ORT sessions; default: this rank's cores (defaultThreads). */
  threads?: number;
  /** Execution provider: 'gpu' is onnxruntime's WebGPU provider, 'auto' the GPU where an adapter exists (device.ts); default: the engine's build_config.device. */
  device?: DeviceRequest;
  /**
   * Whether onnxruntime's intra-op worker threads spin while waiting for work (its
   * session.intra_op.allow_spinning). Default: TPRUN_ORT_SPIN=1|0, else off. Spinning threads hold
   * their cores between the small parallel sections of a decode step; where the cores are shared (other
   * ranks of the job, other jobs) they take time from the threads doing the work: on the 2-core machine
   * under load, 2-thread MatMulNBits ran 2.6–4× faster with spinning off, at half the CPU time (README).
   */
  spin?: boolean;
  /** Extra onnxruntime session options for every segment (e.g. enableProfiling for scripts/gpu/profile.mjs). */
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

export interface ForwardRequest {
  batch: number;
  seq: number;
  /** [batch * seq] token ids, right-padded. */
  ids: ArrayLike<number>;
  /** Per row: total length (past + valid new tokens) - 1. */
  seqlensK: Int32Array;
  /** Longest row's total length. */
  totalSeq: number;
  /** Per row, which positions (within this call's seq) to compute logits for: [batch * npos]. */
  positions: ArrayLike<number>;
  npos: number;
}

/** The KV cache of one batch: per layer a [batch, kv_heads, capacity, head] key and value buffer. */
export class KvCache {
  readonly tensors: ort.Tensor[][] = [];
  /** Bytes of all its key and value buffers. */
  readonly bytes: number;
  private disposed = false;
  constructor(readonly batch: number, readonly capacity: number, layers: number, sh: RankShape, dtype: 'float32' | 'float16' | 'int8', private onDispose?: () => void) {
    const n = batch * sh.kvHeadsPerRank * capacity * sh.headSize;
    const dims = [batch, sh.kvHeadsPerRank, capacity, sh.headSize];
    for (let l = 0; l < layers; l++) {
      this.tensors.push([0, 1].map(() => new ort.Tensor(dtype, dtype === 'float32' ? new Float32Array(n) : dtype === 'int8' ? new Int8Array(n) : new Uint16Array(n), dims)));
    }
    this.bytes = 2 * layers * n * (dtype === 'float32' ? 4 : dtype === 'int8' ? 1 : 2);
  }

  /** Frees the GPU buffers a GPU runner put in place of the host tensors. */
  dispose(): void {
    for (const kv of this.tensors) for (const t of kv) if (t.location === 'gpu-buffer') t.dispose();
    if (!this.disposed) this.onDispose?.();
    this.disposed = true;
  }
}

/**
 * This rank's cores (rank/affinity.ts rankCores): the slice tprun bound it to, or the CPUs mpirun/srun
 * bound it to, as they are, else its share of the node's among the local ranks. Dividing a bound slice by the local ranks again left ORT a fraction of
 * the rank's own cores (tp 4 on 16 cores: 1 thread where the rank had 4). Arguments as rankCores's (tests).
 */
export function defaultThreads(...a: Parameters<typeof rankCores>): number {
  return rankCores(...a);
}

export class EngineRunner {
  private constructor(
    readonly engine: Engine,
    readonly world: World,
    private sessions: ort.InferenceSession[],
    readonly shape: RankShape,
    readonly device: Device = 'cpu',
  ) {
    const c = engine.config;
    this.mapping = new Mapping({ world_size: engine.worldSize, tp_size: c.tp_size, pp_size: engine.pp }, engine.rank);
    this.group = stageGroup(world, this.mapping);
  }

  /** This rank's place (tp rank, pipeline stage) and its stage's tensor-parallel group. */
  readonly mapping: Mapping;
  readonly group: Group;

  /**
   * Where forward() spends its time (session.run, which includes uploads, the device wait and readbacks;
   * all-reduces), summed since load; decode_* only over one-token forwards, so a decode step's share in
   * all-reduce is not diluted by the prompt's (whose all-reduces move T times the bytes).
   */
  readonly stats = { runs: 0, run_ms: 0, allreduce_ms: 0, decode_forwards: 0, decode_ms: 0, decode_allreduce_ms: 0 };

  /** Whose kernels run the engine (--kernels; the WGSL runner says 'wgsl'). */
  readonly kernels = 'ort' as const;

  /** KV-cache bytes held now and at most at once since load (all caches alive together, e.g. pp micro-batches). */
  readonly kv = { live: 0, peak: 0 };

  /**
   * Bytes of this rank's weights and KV caches, by where they live: on the WebGPU provider the weights
   * are uploaded at load and the caches move to GPU buffers on their first step (the host arrays are then
   * dropped); on the CPU both stay in host memory. Weights are the tensor bytes of weights.bin, without
   * its alignment padding.
   */
  memory(): { engine_bytes: { host: number; gpu: number }; kv_cache_bytes: { host: number; gpu: number } } {
    const w = this.engine.weightBytes;
    const on = (n: number) => this.device === 'gpu' ? { host: 0, gpu: n } : { host: n, gpu: 0 };
    return { engine_bytes: on(w), kv_cache_bytes: on(this.kv.peak) };
  }

  static async load(engine: Engine, world: World, opts: RunnerOptions = {}): Promise<EngineRunner> {
    if (world.size !== engine.worldSize) throw new Error(`engine was built for ${engine.worldSize} rank(s) but the world has ${world.size}`);
    const threads = opts.threads ?? defaultThreads();
    const spin = opts.spin ?? onOff('TPRUN_ORT_SPIN', process.env, false);
    const epOptions = webgpuEpOptions(); // before the device is chosen: refused on every device
    const choice = await chooseDevice(opts.device ?? engine.config.build_config.device);
    if (choice.device === 'gpu' && world.rank === 0) await noteCpuLinears(engine);
    const executionProviders = choice.device === 'gpu' && epOptions ? [{ ...epOptions, name: 'webgpu' }] : choice.executionProviders;
    // On the GPU the KV cache and the residual stay in GPU buffers; logits and partial sums come to the host as
    // CPU outputs (reading a 'gpu-buffer' tensor back with getData() aborts the process in onnxruntime-node 1.30).
    const gpuOut = (path: string) => choice.device === 'gpu' ? { preferredOutputLocation: outputLocations('gpu', onnxOutputNames(readFileSync(path))) } : {};
    const sessions: ort.InferenceSession[] = [];
    await traceSpan('load', async () => {
      for (let i = 0; i < engine.segmentCount; i++) {
        const path = engine.segmentPath(i);
        try {
          sessions.push(await ort.InferenceSession.create(path, {
            intraOpNumThreads: threads,
            interOpNumThreads: 1,
            graphOptimizationLevel: 'all',
            executionMode: 'sequential',
            extra: {
              session: {
                // onnxruntime_session_options_config_keys.h kOrtSessionOptionsConfigAllowIntraOpSpinning.
                intra_op: { allow_spinning: spin ? '1' : '0' },
                // kOrtSessionOptionsAvx2PrecisionMode: on x86 CPUs whose u8·s8 kernel saturates (AVX2, AVX-512
                // before VNNI: MlasPlatformU8S8Overflow) onnxruntime makes the int8 weights of integer GEMMs
                // (MatMulInteger: --prefill-int8-gemm, W8A8) unsigned at load (Avx2WeightS8ToU8Transformer),
                // so they compute exactly; CPUs with VNNI keep the faster signed kernel. A prefill-int8-gemm
                // engine's greedy tokens changed on an AVX2-only CPU without it.
                x64quantprecision: '1',
              },
            },
            executionProviders,
            ...gpuOut(path),
            ...opts.sessionOptions,
          }));
        } catch (e) {
          throw new Error(`${path}: onnxruntime cannot load it (${(e as Error).message.split('\n')[0]})`);
        }
      }
    }, { segments: engine.segmentCount, threads, spin, device: choice.device, why: choice.reason });
    return new EngineRunner(engine, world, sessions, rankShape(engine.config.pretrained_config, engine.rank), choice.device);
  }

  get config() { return this.engine.config; }
  /** The KV cache's element type: int8 with kv_cache_quant_algo INT8, else the engine dtype. */
  get kvDtype(): 'float32' | 'float16' | 'int8' {
    return this.engine.config.pretrained_config.quantization?.kv_cache_quant_algo === 'INT8' ? 'int8' : this.engine.config.build_config.dtype;
  }
  get vocabSize(): number { return this.engine.config.pretrained_config.vocab_size; }

  newCache(batch: number, capacity: number): KvCache {
    const c: KvCache = new KvCache(batch, capacity, this.shape.layers, this.shape, this.kvDtype, () => { this.kv.live -= c.bytes; });
    this.kv.live += c.bytes;
    this.kv.peak = Math.max(this.kv.peak, this.kv.live);
    return c;
  }

  /**
   * One forward pass over all segments. With `cache`, keys and values are read from and written into it
   * in place; without, attention sees only this call's tokens. Returns float32 logits [batch, npos, vocab].
   */
  async forward(req: ForwardRequest, cache?: KvCache, calib?: Map<string, { data: Float32Array; dims: readonly number[] }>): Promise<Float32Array> {
    const out = await this.forwardStage(req, cache, undefined, calib);
    if (!out.logits) throw new Error('forward() on a pipeline stage before the last: use forwardStage()');
    return out.logits;
  }

  /**
   * One pipeline stage's forward pass: from `hiddenIn` (float32 [batch, seq, hidden], the previous
   * stage's output) on every stage but the first; gives logits on the last stage and `hidden` (to send on)
   * elsewhere. With pp = 1 this is forward().
   */
  async forwardStage(req: ForwardRequest, cache?: KvCache, hiddenIn?: Float32Array, calib?: Map<string, { data: Float32Array; dims: readonly number[] }>): Promise<{ logits?: Float32Array; hidden?: Float32Array }> {
    if (!cache && this.kvDtype === 'int8') {
      // An int8 cache reaches GroupQueryAttention through DequantizeLinear (onnx-kv-cache.ts): an intermediate,
      // which onnxruntime's planner lets GQA's present reuse in place (GQA declares past -> present MayInplace,
      // contrib_ops/cpu/bert/group_query_attention.cc). An empty past [B, H, 0, D] then cannot hold the
      // present [B, H, seq, D] ("Shape mismatch attempting to re-use buffer"). A cacheless forward (perplexity,
      // calibration) therefore runs as generate's prefill does: over a zeroed cache of exactly this call's
      // length, freed after it. The prefill attends over its own float keys and values either way.
      const scratch = this.newCache(req.batch, req.totalSeq);
      try {
        return await this.forwardStage(req, scratch, hiddenIn, calib);
      } finally {
        scratch.dispose();
      }
    }
    const { batch, seq, npos } = req;
    const dt = this.engine.config.build_config.dtype;
    const sh = this.shape;
    const common: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(Array.from(req.ids, (x) => BigInt(x))), [batch, seq]),
      seqlens_k: new ort.Tensor('int32', req.seqlensK, [batch]),
      total_sequence_length: new ort.Tensor('int32', Int32Array.of(req.totalSeq), []),
      logit_positions: new ort.Tensor('int64', BigInt64Array.from(Array.from(req.positions, (x) => BigInt(x))), [batch, npos]),
    };
    if (hiddenIn) common.hidden_in = new ort.Tensor('float32', hiddenIn, [batch, seq, this.engine.config.pretrained_config.hidden_size]);
    const kdt = this.kvDtype;
    const emptyKv = new ort.Tensor(kdt, kdt === 'float32' ? new Float32Array(0) : kdt === 'int8' ? new Int8Array(0) : new Uint16Array(0), [batch, sh.kvHeadsPerRank, 0, sh.headSize]);
    let carried: Record<string, ort.Tensor> = {};
    let logits: Float32Array | undefined;
    let hidden: Float32Array | undefined;
    const decode = seq === 1;
    const tf = performance.now();
    for (let i = 0; i < this.sessions.length; i++) {
      const s = this.sessions[i];
      const feeds: Record<string, ort.Tensor> = {};
      const fetches: Record<string, ort.Tensor | null> = {};
      for (const name of s.inputNames) {
        if (name.startsWith('past.')) {
          const [, l, kind] = name.split('.');
          feeds[name] = cache ? cache.tensors[+l][kind === 'key' ? 0 : 1] : emptyKv;
        } else {
          feeds[name] = common[name] ?? carried[name.replace(/_in$/, '')];
          if (!feeds[name]) throw new Error(`segment ${i} needs input ${name} that nothing provides`);
        }
      }
      for (const name of s.outputNames) {
        if (name.startsWith('present.')) {
          // Without a cache the CPU skips present.*; a GPU session must fetch every 'gpu-buffer' output
          // (onnxruntime-node 1.30 aborts otherwise) and the outputs are freed right after the run.
          if (!cache) { if (this.device === 'gpu') fetches[name] = null; continue; }
          const [, l, kind] = name.split('.');
          const t = cache.tensors[+l][kind === 'key' ? 0 : 1];
          // GPU: the first call uploads the host cache and gets it back as a GPU output, bound in place after.
          fetches[name] = this.device === 'gpu' && t.location !== 'gpu-buffer' ? null : t;
        } else if (calib || !name.startsWith('calib.')) {
          fetches[name] = null;
        }
      }
      const t0 = performance.now();
      const out = await s.run(feeds, fetches);
      this.stats.runs++;
      this.stats.run_ms += performance.now() - t0;
      for (const v of Object.values(carried)) if (v.location === 'gpu-buffer') v.dispose();
      carried = {};
      for (const [name, v] of Object.entries(out)) {
        if (name.startsWith('present.')) {
          if (this.device === 'gpu' && !cache) (v as ort.Tensor).dispose();
          else if (this.device === 'gpu' && cache) {
            const [, l, kind] = name.split('.');
            cache.tensors[+l][kind === 'key' ? 0 : 1] = v as ort.Tensor;
          }
        } else if (name === 'logits') logits = v.data as Float32Array;
        else if (name === 'hidden') hidden = v.data as Float32Array;
        else if (name.startsWith('calib.')) calib?.set(name.slice(6), { data: v.data as Float32Array, dims: v.dims });
        else carried[name] = v as ort.Tensor;
      }
      const partial = carried.partial;
      if (partial && this.group.size > 1) {
        const t1 = performance.now();
        await traceSpan('allreduce', () => this.group.allReduce(partial.data as Float32Array, 'sum'), { bytes: (partial.data as Float32Array).byteLength });
        const ms = performance.now() - t1;
        this.stats.allreduce_ms += ms;
        if (decode) this.stats.decode_allreduce_ms += ms;
      }
    }
    if (decode) { this.stats.decode_forwards++; this.stats.decode_ms += performance.now() - tf; }
    if (hidden) return { hidden };
    if (!logits) throw new Error('engine produced no logits');
    return { logits: await this.gatherLogits(logits, batch * npos) };
  }

  /**
   * Runs the graph built with calibration outputs and returns this rank's input activation of every
   * linear (`transformer.layers.L.attention.qkv`, ... , `lm_head`) as float32 [batch, seq, in].
   */
  async calibrationActivations(req: ForwardRequest): Promise<Map<string, { data: Float32Array; dims: readonly number[] }>> {
    if (!this.engine.config.build_config.calibration) throw new Error('engine was built without calibration outputs (BuildConfig calibration: true)');
    const found = new Map<string, { data: Float32Array; dims: readonly number[] }>();
    await this.forward(req, undefined, found);
    return found;
  }

  private async gatherLogits(local: Float32Array, rows: number): Promise<Float32Array> {
    const V = this.vocabSize;
    const vr = this.shape.vocabPerRank;
    const tp = this.group.size;
    if (tp === 1) return vr === V ? local : sliceCols(local, rows, vr, V);
    const all = await traceSpan('allgather', () => this.group.allGather(local));
    const out = new Float32Array(rows * V);
    for (let r = 0; r < tp; r++) {
      const width = Math.min(vr, V - r * vr);
      if (width <= 0) break;
      for (let i = 0; i < rows; i++) {
        out.set(all.subarray(r * rows * vr + i * vr, r * rows * vr + i * vr + width), i * V + r * vr);
      }
    }
    return out;
  }

  /** The segments' onnxruntime sessions (for profiling and tools, not for running them directly). */
  get ortSessions(): readonly ort.InferenceSession[] { return this.sessions; }

  async close(): Promise<void> {
    for (const s of this.sessions) await s.release();
  }
}

function sliceCols(a: Float32Array, rows: number, width: number, keep: number): Float32Array {
  const out = new Float32Array(rows * keep);
  for (let i = 0; i < rows; i++) out.set(a.subarray(i * width, i * width + keep), i * keep);
  return out;
}

/**
 * An engine built for the CPU keeps its float linears as FusedMatMul (linear.ts), which onnxruntime's WebGPU
 * provider lacks: they run on the CPU provider, with copies to and from the GPU around each. Correct, but a
 * user who asked for the GPU should hear it once (rank 0) rather than find it in a profile.
 */
async function noteCpuLinears(engine: Engine): Promise<void> {
  if (engine.config.build_config.device !== 'cpu') return;
  const { engineGraph } = await import('./engine-weights.js');
  const segments = Array.from({ length: engine.segmentCount }, (_, i) => engine.segmentPath(i));
  const n = engineGraph(segments).nodes.filter((x) => x.op === 'FusedMatMul').length;
  if (n) process.stderr.write(`tprun: note: ${engine.dir ?? 'this engine'} was built for the CPU: its ${n} float linears (FusedMatMul) run on onnxruntime's CPU provider under WebGPU; rebuild it with --device gpu to run them on the GPU\n`);
}
