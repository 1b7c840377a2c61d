/// <reference types="@webgpu/types" />
// Runs one rank's float16 engine with the hand-written WGSL kernels (--kernels wgsl): the same weights
// the ONNX segments hold, read from the engine directory, on the rank's WebGPU device through Dawn.
//
// One call = one command buffer (at tp 1): embedding, per layer norm → qkv GEMV → rope + KV write →
// attention → dense GEMV + residual → norm → fused gate/up GEMV + SwiGLU → down GEMV + residual, then
// ln_f and lm_head on the positions that get logits. A greedy decode step ends with an argmax on the GPU
// and reads back 8 bytes. At tp > 1 the pass stops after each row-parallel linear for a host all-reduce
// over the world (2 per layer: the cost the ONNX path pays too).
//
// Pipeline parallelism: a rank holds its stage's layers (the engine's segments already hold only those),
// and the stage's role decides which dispatches exist: the first stage embeds, a later one starts from the
// previous stage's hidden states (float32 [tokens, hidden], written into the residual stream); the last
// holds ln_f + lm_head, an earlier one reads its residual stream back for the next stage. The hand-offs
// themselves are the ONNX path's (../generate.ts runPipeline, ../perplexity.ts), through forwardStage.
//
// Batches are run row by row (each row its own KV cache slot); the KV cache is float16 where the adapter
// has shader-f16 (attention still accumulates in float32), else float32.

import { InputError } from '../../core/errors.js';
import type { Group, World } from '../../rank/types.js';
import type { Engine } from '../engine.js';
import { rankShape, type RankShape } from '../llama-graph.js';
import type { ForwardRequest } from '../runtime.js';
import { Mapping } from '../../sharding/mapping.js';
import { stageGroup } from '../stage-comm.js';
import { WEIGHT_ONLY_ALGOS } from '../build-config.js';
import { traceSpan } from '../../util/trace.js';
import { openWgslDevice, type WgslDevice } from './gpu.js';
import { onOff, prefillSubmitEvery } from './variants.js';
import { engineGraph, TensorReader } from '../engine-weights.js';
import { Pipelines } from './pipelines.js';
import { concat, Uploader, type GemvWeight } from './upload.js';
import { allocActs, isReduce, OpBuilder, type Acts, type Dims, type HeadWeights, type ModelWeights, type Op, type Reduce } from './layers.js';
import { ATTN_MAX_HEAD } from './kernels/attention.js';
import { record, runs, type Dispatch } from './kernels/common.js';
import { GpuProfiler } from './profile.js';

export interface WgslRunnerOptions { device?: 'cpu' | 'gpu' | 'auto' }

type AheadKind = 'hidden' | 'greedy' | 'logits' | 'none';
/** A one-token pass's command buffer, recorded ahead of the call that submits it (WgslRunner.decodePass). */
interface Ahead { kind: AheadKind; buf?: GPUCommandBuffer; timer?: NodeJS.Immediate }

/** What a call starts from: token ids (the first pipeline stage) or the previous stage's hidden states [T, hidden]. */
type StageInput = { ids: ArrayLike<number> } | { hidden: Float32Array };

export class WgslCache {
  readonly k: GPUBuffer[] = [];
  readonly v: GPUBuffer[] = [];
  constructor(readonly batch: number, readonly capacity: number, readonly ops: Op[], private owned: { destroy(): void }[]) {}
  dispose(): void { for (const b of this.owned) b.destroy(); this.owned = []; }
}

/** Quantization schemes whose linears are MatMulNBits with float activations (src/quantization/onnx-linear.ts). */

/** Why the WGSL kernels cannot run this engine (one line, naming the feature and the way out), or null. */
export function wgslRefusal(engine: Engine): string | null {
  const cfg = engine.config.pretrained_config;
  const bc = engine.config.build_config;
  const q = cfg.quantization;
  if (q?.kv_cache_quant_algo) return `a ${q.kv_cache_quant_algo} KV cache; --kernels wgsl runs float KV caches (use --kernels ort)`;
  if (q?.quant_algo && !WEIGHT_ONLY_ALGOS.has(q.quant_algo)) return `quantized engine (${q.quant_algo}); --kernels wgsl runs float16 engines and int4 / int8 weight-only ones (W4A16_AWQ, W4A16, W8A16; use --kernels ort)`;
  if (bc.dtype !== 'float16') return `a ${bc.dtype} engine; --kernels wgsl runs float16 engines (build with --dtype float16, or use --kernels ort)`;
  return null;
}

/**
 * `make()` inside a validation error scope: a kernel that does not compile on this adapter is one clear error
 * rather than a stream of uncaptured ones.
 */
async function compiled<T>(gpu: WgslDevice, make: () => T): Promise<T> {
  gpu.device.pushErrorScope('validation');
  let out: T;
  try {
    out = make();
  } catch (e) {
    await gpu.device.popErrorScope();
    throw e;
  }
  const err = await gpu.device.popErrorScope();
  if (err) throw new Error(`WGSL kernels do not compile on ${gpu.adapter}: ${err.message.split('\n')[0]}`);
  return out;
}

export class WgslRunner {
  readonly device = 'gpu' as const;
  readonly kernels = 'wgsl' as const;
  /**
   * As the ONNX runner's (runtime.ts; a one-token forward here is one row's pass), plus decode_host_ms: at
   * tp > 1, from a one-token pass's partial sums reaching the host to their sum being queued back (the host
   * all-reduce and the copies around it). The GPU has nothing queued then (the dispatches after the point
   * wait for the sum), so it is a lower bound of the GPU's idle time at all-reduce points.
   */
  readonly stats = { runs: 0, run_ms: 0, allreduce_ms: 0, decode_forwards: 0, decode_ms: 0, decode_allreduce_ms: 0, decode_host_ms: 0 };
  readonly mapping: Mapping;
  readonly group: Group;
  private readRes: GPUBuffer;
  private readRes2: GPUBuffer | undefined;
  private readLogits: GPUBuffer;
  private readPartial: GPUBuffer;
  /** ln_f, lm_head and the argmax: the last pipeline stage's dispatches (absent on earlier stages). */
  private head: { logits: Dispatch[]; argmax: Dispatch } | undefined;
  private builder: OpBuilder;
  /** Dispatches per command buffer of a prompt (0: one buffer). */
  private readonly submitEvery = prefillSubmitEvery();
  /** TPRUN_WGSL_REDUCE_AHEAD=0: each all-reduce point waits for its sums before recording what follows (the form before). */
  private readonly reduceAhead = onOff('TPRUN_WGSL_REDUCE_AHEAD');

  private constructor(
    readonly engine: Engine,
    readonly world: World,
    readonly shape: RankShape,
    readonly gpu: WgslDevice,
    private pl: Pipelines,
    private d: Dims,
    private w: ModelWeights,
    headW: HeadWeights | undefined,
    private a: Acts,
    private vocabParallel: boolean,
  ) {
    const c = engine.config;
    this.mapping = new Mapping({ world_size: engine.worldSize, tp_size: c.tp_size, pp_size: engine.pp }, engine.rank);
    this.group = stageGroup(world, this.mapping);
    const dev = gpu.device;
    const R = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    this.readRes = dev.createBuffer({ size: 16, usage: R, label: 'read.res' });
    this.readLogits = dev.createBuffer({ size: Math.max(16, a.logitRows * d.Vr * 4), usage: R, label: 'read.logits' });
    this.readPartial = dev.createBuffer({ size: a.maxT * d.H * 4, usage: R, label: 'read.partial' });
    this.builder = new OpBuilder(dev, pl, d, a, c.tp_size);
    const offset = this.mapping.tpRank * shape.vocabPerRank;
    this.head = headW && this.builder.head(headW, Math.min(d.Vr, this.vocabSize - offset), offset);
  }

  get config() { return this.engine.config; }
  get vocabSize(): number { return this.engine.config.pretrained_config.vocab_size; }

  static async load(engine: Engine, world: World, opts: WgslRunnerOptions = {}): Promise<WgslRunner> {
    const dir = engine.dir ?? 'engine';
    if (opts.device === 'cpu') throw new InputError('--kernels wgsl runs on the GPU: drop --device cpu (or use --kernels ort)');
    if (world.size !== engine.worldSize) throw new Error(`engine was built for ${engine.worldSize} rank(s) but the world has ${world.size}`);
    const cfg = engine.config.pretrained_config;
    const bc = engine.config.build_config;
    const why = wgslRefusal(engine);
    if (why) throw new InputError(`${dir}: ${why}`);
    const sh = rankShape(cfg, engine.rank);
    if (sh.headSize > ATTN_MAX_HEAD || sh.headSize % 2) throw new InputError(`${dir}: head size ${sh.headSize}; the WGSL attention kernel takes even head sizes up to ${ATTN_MAX_HEAD}`);
    if (sh.headsPerRank % sh.kvHeadsPerRank) throw new InputError(`${dir}: ${sh.headsPerRank} heads per rank is not a multiple of ${sh.kvHeadsPerRank} KV heads`);

    const gpu = await openWgslDevice();
    const dev = gpu.device;
    return traceSpan('load', async () => {
      const pl = await compiled(gpu, () => new Pipelines(dev, gpu.subgroups, gpu.kv16, gpu.sgmat));
      const segs = Array.from({ length: engine.segmentCount }, (_, i) => engine.segmentPath(i));
      const graph = engineGraph(segs);
      const reader = new TensorReader(graph.tensors);
      // MatMulNBits nodes by their B initializer: how the engine's quantized linears are to be read.
      const nodes = new Map(graph.nodes.filter((n) => n.op === 'MatMulNBits').map((n) => [n.inputs[1], n]));
      // Float linears of engines built for the CPU: [N, K] operands of FusedMatMul with transB (linear.ts).
      const rowMajor = new Set(graph.nodes.filter((n) => n.op === 'FusedMatMul' && n.attrs.transB === 1).map((n) => n.inputs[1]));
      const up = new Uploader(dev, pl, reader, gpu.maxBinding, nodes, rowMajor);
      // The norm weight times the consuming linear's prequant factor (per part): what the fused decode GEMV applies.
      const normG = (norm: Float32Array, w: GemvWeight, label: string) => up.vector(concat((w.pre ?? Array(w.swiglu ? 2 : 1).fill(undefined)).map((p) => p ? norm.map((v, i) => v * p[i]) : norm)), label);
      try {
        const L = (l: number, s: string) => `transformer.layers.${l}.${s}`;
        const vocabParallel = cfg.use_parallel_embedding === true && sh.tp > 1 && sh.first;
        // A later stage has no table: OpBuilder.embed makes one dispatch per chunk, so none there.
        const table = sh.first ? up.table('transformer.vocab_embedding.weight') : { chunks: [], rows: 0 };
        const layers = [];
        for (let l = 0; l < sh.layers; l++) {
          const inNorm = up.floats(L(l, 'input_layernorm.weight'));
          const postNorm = up.floats(L(l, 'post_layernorm.weight'));
          const qkv = await up.linear([L(l, 'attention.qkv.weight')]);
          const gateUp = await up.linear([L(l, 'mlp.fc.weight'), L(l, 'mlp.gate.weight')]);
          layers.push({
            inNorm: inNorm.buf,
            qkv,
            dense: await up.linear([L(l, 'attention.dense.weight')]),
            postNorm: postNorm.buf,
            gateUp,
            proj: await up.linear([L(l, 'mlp.proj.weight')]),
            inNormG: normG(inNorm.host, qkv, L(l, 'input_layernorm.g')),
            postNormG: normG(postNorm.host, gateUp, L(l, 'post_layernorm.g')),
          });
        }
        const headW: HeadWeights | undefined = sh.last
          ? { lnf: up.floats('transformer.ln_f.weight').buf, lmHead: await up.linear(['lm_head.weight']) }
          : undefined;
        const cos = up.floats('rotary.cos_cache');
        const sin = up.floats('rotary.sin_cache').buf;
        await up.done();
        const D = sh.headSize;
        const d: Dims = {
          H: cfg.hidden_size, Hq: sh.headsPerRank, Hkv: sh.kvHeadsPerRank, D,
          I: layers[0]?.gateUp.N ?? 0, qkvN: (sh.headsPerRank + 2 * sh.kvHeadsPerRank) * D,
          Vr: headW?.lmHead.N ?? 0, layers: sh.layers, eps: cfg.norm_epsilon,
        };
        if (layers[0] && layers[0].qkv.N !== d.qkvN) throw new InputError(`${dir}: attention.qkv has ${layers[0].qkv.N} outputs, expected (${d.Hq} + 2·${d.Hkv})·${D}`);
        if (cos.dims[1] !== D / 2) throw new InputError(`${dir}: rotary.cos_cache is [${cos.dims}], expected [max_seq_len, ${D / 2}]`);
        const w: ModelWeights = {
          embed: table,
          embedOffset: vocabParallel ? sh.rank * table.rows : 0,
          layers, cos: cos.buf, sin,
        };
        const acts = allocActs(dev, d, Math.max(1, bc.max_input_len), gpu.maxBinding);
        // Every pipeline the model's dispatches use is compiled now (a KV cache's dispatch list makes them).
        return await compiled(gpu, () => {
          const runner = new WgslRunner(engine, world, sh, gpu, pl, d, w, headW, acts, vocabParallel);
          runner.newCache(1, 1).dispose();
          runner.kvPeak = 0;
          return runner;
        });
      } finally {
        reader.close();
      }
    }, { kernels: 'wgsl', adapter: gpu.adapter });
  }

  private kvNow = 0;
  private kvPeak = 0;

  /** Weights and KV caches: all on the GPU (the same shape of figures as EngineRunner.memory()). */
  memory(): { engine_bytes: { host: number; gpu: number }; kv_cache_bytes: { host: number; gpu: number } } {
    const w = this.engine.weightBytes;
    return { engine_bytes: { host: 0, gpu: w }, kv_cache_bytes: { host: 0, gpu: this.kvPeak } };
  }

  /** The KV cache's element type: float16 where the adapter has shader-f16 (half the bytes), else float32. */
  get kvDtype(): 'float16' | 'float32' { return this.gpu.kv16 ? 'float16' : 'float32'; }

  /** A KV cache of `batch` rows × `capacity` positions (GPU-resident, kvDtype) and the dispatch list bound to it. */
  newCache(batch: number, capacity: number): WgslCache {
    const { d } = this;
    const dev = this.gpu.device;
    // Whole 4-byte words: a float16 cache of an odd element count still binds as a storage buffer.
    const bytes = Math.ceil((batch * d.Hkv * capacity * d.D * (this.gpu.kv16 ? 2 : 4)) / 4) * 4;
    if (bytes > this.gpu.maxBinding) throw new InputError(`a KV cache of ${batch} row(s) × ${capacity} positions needs ${bytes} bytes per layer, more than the device's largest binding (${this.gpu.maxBinding})`);
    const kv = Array.from({ length: d.layers }, (_, l) => ({
      k: dev.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE, label: `k${l}` }),
      v: dev.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE, label: `v${l}` }),
    }));
    const b = new OpBuilder(dev, this.pl, d, this.a, this.config.tp_size);
    const ops = b.body(this.w, kv, this.vocabParallel, capacity);
    const cache = new WgslCache(batch, capacity, ops, [b, ...kv.flatMap((x) => [x.k, x.v])]);
    // What monitoring reports (./../monitor.ts): the KV bytes held now and at most.
    const held = 2 * d.layers * bytes;
    this.kvNow += held;
    this.kvPeak = Math.max(this.kvPeak, this.kvNow);
    const dispose = cache.dispose.bind(cache);
    let gone = false;
    cache.dispose = () => { if (!gone) { gone = true; this.kvNow -= held; } this.dropAhead(cache); dispose(); };
    cache.k.push(...kv.map((x) => x.k));
    cache.v.push(...kv.map((x) => x.v));
    return cache;
  }

  /** The second half of an all-reduce point: `part` (op.reduce's rows, on their way back) summed over the group and written back. */
  private async reduce(op: Reduce, part: Promise<Float32Array>, decode: boolean): Promise<void> {
    const data = await part;
    const bytes = data.byteLength;
    const t1 = performance.now();
    const sum = await traceSpan('allreduce', () => this.group.allReduce(data, 'sum'), { bytes });
    const ms = performance.now() - t1;
    this.stats.allreduce_ms += ms;
    if (decode) this.stats.decode_allreduce_ms += ms;
    this.gpu.device.queue.writeBuffer(op.reduce, 0, sum as Float32Array<ArrayBuffer>);
  }

  private prof?: GpuProfiler | null;
  /** The GPU time profiler (TPRUN_WGSL_PROFILE=FILE with 'timestamp-query'), else null. */
  private profiler(cache: WgslCache): GpuProfiler | null {
    if (this.prof !== undefined) return this.prof;
    const file = process.env.TPRUN_WGSL_PROFILE;
    this.prof = file && this.gpu.timestamps ? new GpuProfiler(this.gpu.device, cache.ops.length + (this.head?.logits.length ?? 0) + 1, `${file}.rank${this.world.rank}`, this.gpu.adapter) : null;
    return this.prof;
  }

  /**
   * Runs T tokens of batch row `row` from position pos0 through this stage's layers, from token ids (the
   * first stage) or the previous stage's hidden states [T, hidden] (a later one). The last stage then runs
   * the head on positions `sel` (indices into this call) and returns this rank's logits [sel.length, Vr],
   * or with `greedy` (one position) the argmax as [id, value]; an earlier stage returns its residual
   * stream [T, hidden] for the next.
   */
  private async run(cache: WgslCache, row: number, input: StageInput, T: number, pos0: number, sel: number[], greedy: boolean): Promise<Float32Array> {
    const { a, d } = this;
    const dev = this.gpu.device;
    const q = dev.queue;
    if (T > a.maxT) throw new InputError(`${T} tokens in one call exceed the engine's max_input_len ${a.maxT}`);
    if (pos0 + T > cache.capacity) throw new Error(`positions up to ${pos0 + T} exceed the KV cache's ${cache.capacity}`);
    this.checkStageInput('hidden' in input);
    const t0 = performance.now();
    q.writeBuffer(a.step, 0, Uint32Array.of(T, pos0, row, cache.capacity));
    if ('ids' in input) q.writeBuffer(a.ids, 0, Uint32Array.from(input.ids));
    else {
      if (input.hidden.length !== T * d.H) throw new Error(`hidden states of ${input.hidden.length} floats for ${T} token(s) of hidden size ${d.H}`);
      q.writeBuffer(a.resid, 0, input.hidden as Float32Array<ArrayBuffer>);
    }
    const prof = this.profiler(cache);
    if (T === 1 && sel.length <= 1 && !prof && !cache.ops.some(isReduce)) return this.decodePass(cache, sel.length === 1, greedy, t0);
    let enc = dev.createCommandEncoder();
    if (prof && !cache.ops.some(isReduce)) {
      const ops = (cache.ops as Dispatch[]).filter((op) => runs(op, T));
      prof.encode(enc, ops, ops.map(() => T));
      q.submit([enc.finish()]);
      await prof.collect(T === 1 ? 'decode' : 'prefill', ops);
      enc = dev.createCommandEncoder();
    }
    let pass = enc.beginComputePass();
    // A prompt's dispatches go in command buffers of submitEvery (variants.ts prefillSubmitEvery); a one-token
    // call's (tp > 1 decode) are already cut short by its all-reduce points.
    const every = T > 1 ? this.submitEvery : 0;
    let recorded = 0;
    let submitAt = every / 4;
    // At an all-reduce point the partial sums' copy is submitted, and the dispatches up to the next point
    // are recorded while the GPU finishes and the copy maps; the host waits, sums and writes them back only
    // then, ahead of those dispatches in queue order (their recording is off the crossing's path).
    const decode = T === 1;
    let pending: { op: Reduce; part: Promise<Float32Array>; arrived: number } | undefined;
    const settle = async () => {
      if (pending) {
        await this.reduce(pending.op, pending.part, decode);
        if (decode) this.stats.decode_host_ms += performance.now() - pending.arrived;
      }
      pending = undefined;
    };
    for (const op of prof && !cache.ops.some(isReduce) ? [] : cache.ops) {
      if (!isReduce(op)) {
        if (record(pass, op, T) && every && ++recorded >= submitAt) {
          pass.end();
          await settle();
          q.submit([enc.finish()]);
          enc = dev.createCommandEncoder();
          pass = enc.beginComputePass();
          submitAt = recorded + every;
        }
        continue;
      }
      pass.end();
      await settle();
      const p: NonNullable<typeof pending> = { op, part: this.readBack(enc, op.reduce, this.readPartial, T * op.n * 4), arrived: 0 };
      p.part = p.part.then((d) => { p.arrived = performance.now(); return d; });
      pending = p;
      pending.part.catch(() => {}); // awaited at the next settle(); a throw before that must not leave it unhandled
      if (!this.reduceAhead) await settle();
      enc = dev.createCommandEncoder();
      pass = enc.beginComputePass();
      submitAt = recorded + every; // the copy's submit took what came before
    }
    await settle();
    let out: Float32Array;
    if (!this.head) {
      // Not the last stage: the residual stream after this stage's last layer goes to the next stage.
      pass.end();
      out = await this.readBack(enc, a.resid, this.readPartial, T * d.H * 4);
    } else {
      out = new Float32Array(greedy ? 2 : sel.length * d.Vr);
      for (let g0 = 0; g0 < sel.length; g0 += a.logitRows) {
        const n = Math.min(a.logitRows, sel.length - g0);
        if (g0 > 0) { enc = dev.createCommandEncoder(); pass = enc.beginComputePass(); }
        q.writeBuffer(a.headStep, 0, Uint32Array.of(n, 0, 0, 0));
        q.writeBuffer(a.sel, 0, Uint32Array.from(sel.slice(g0, g0 + n)));
        for (const op of this.head.logits) record(pass, op, n);
        if (greedy) record(pass, this.head.argmax, 1);
        pass.end();
        if (greedy) {
          const r = await this.readBack(enc, a.res, this.readRes, 8);
          out[0] = new Uint32Array(r.buffer)[0];
          out[1] = r[1];
        } else out.set(await this.readBack(enc, a.logits, this.readLogits, n * d.Vr * 4), g0 * d.Vr);
      }
    }
    this.stats.runs += this.engine.segmentCount; // counted as the ONNX runner counts session runs (bench divides by segments)
    this.stats.run_ms += performance.now() - t0;
    if (decode) { this.stats.decode_forwards++; this.stats.decode_ms += performance.now() - t0; }
    return out;
  }

  /**
   * A one-token pass at tp 1 (a decode step, in a pipeline or not): its command buffer is the same every
   * step of a cache (position and row live in the step uniform, written through the queue before the
   * submit), so the next one is recorded ahead, while this rank waits for its next input (the previous
   * stage's hidden states, or the token back from the last stage), and only the submit stays on the path.
   */
  private async decodePass(cache: WgslCache, head: boolean, greedy: boolean, t0: number): Promise<Float32Array> {
    const { a } = this;
    const q = this.gpu.device.queue;
    if (this.head && head) {
      q.writeBuffer(a.headStep, 0, Uint32Array.of(1, 0, 0, 0));
      q.writeBuffer(a.sel, 0, Uint32Array.of(0));
    }
    const kind = !this.head ? 'hidden' : greedy ? 'greedy' : head ? 'logits' : 'none';
    const pending = this.dropAhead(cache);
    q.submit([pending?.kind === kind && pending.buf ? pending.buf : this.recordDecode(cache, kind)]);
    let out = new Float32Array(0);
    const rb = this.decodeReadback(kind);
    if (rb) {
      await rb.dst.mapAsync(GPUMapMode.READ, 0, rb.bytes);
      const r = rb.dst.getMappedRange(0, rb.bytes);
      out = kind === 'greedy' ? Float32Array.of(new Uint32Array(r)[0], new Float32Array(r)[1]) : new Float32Array(r.slice(0));
      rb.dst.unmap();
    }
    // Recorded once this call's caller has moved on (setImmediate: after the I/O it now waits for).
    const next: Ahead = { kind };
    next.timer = setImmediate(() => { next.timer = undefined; next.buf = this.recordDecode(cache, kind); });
    this.ahead.set(cache, next);
    this.stats.runs += this.engine.segmentCount;
    this.stats.run_ms += performance.now() - t0;
    this.stats.decode_forwards++;
    this.stats.decode_ms += performance.now() - t0;
    return out;
  }

  /** Per KV cache: its next one-token pass, recorded ahead (or about to be). */
  private ahead = new Map<WgslCache, Ahead>();

  /** Forgets the cache's pass recorded ahead (or about to be), and returns it. */
  private dropAhead(cache: WgslCache): Ahead | undefined {
    const p = this.ahead.get(cache);
    if (p?.timer) clearImmediate(p.timer);
    this.ahead.delete(cache);
    return p;
  }

  private recordDecode(cache: WgslCache, kind: AheadKind): GPUCommandBuffer {
    const enc = this.gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const op of cache.ops) record(pass, op as Dispatch, 1);
    if (this.head && kind !== 'none') {
      for (const op of this.head.logits) record(pass, op, 1);
      if (kind === 'greedy') record(pass, this.head.argmax, 1);
    }
    pass.end();
    const rb = this.decodeReadback(kind);
    if (rb) enc.copyBufferToBuffer(rb.src, 0, rb.dst, 0, rb.bytes);
    return enc.finish();
  }

  /** What a one-token pass reads back: the residual stream (for the next stage), the argmax, or one row of logits. */
  private decodeReadback(kind: AheadKind): { src: GPUBuffer; dst: GPUBuffer; bytes: number } | undefined {
    const { a, d } = this;
    if (kind === 'hidden') return { src: a.resid, dst: this.readPartial, bytes: d.H * 4 };
    if (kind === 'greedy') return { src: a.res, dst: this.readRes, bytes: 8 };
    if (kind === 'logits') return { src: a.logits, dst: this.readLogits, bytes: d.Vr * 4 };
    return undefined;
  }

  /** Submits `enc` with a copy of `src`'s first `bytes` into the mappable `dst`, and returns them. */
  private async readBack(enc: GPUCommandEncoder, src: GPUBuffer, dst: GPUBuffer, bytes: number): Promise<Float32Array> {
    enc.copyBufferToBuffer(src, 0, dst, 0, bytes);
    this.gpu.device.queue.submit([enc.finish()]);
    await dst.mapAsync(GPUMapMode.READ, 0, bytes);
    const out = new Float32Array(dst.getMappedRange(0, bytes).slice(0));
    dst.unmap();
    return out;
  }

  /**
   * Greedy decode of batch row `row` at tp 1 with the token kept on the GPU: step s's argmax writes the id
   * that step s + 1 embeds, so step s + 1 is recorded and submitted while step s runs and the host reads
   * each token one step behind (two readback buffers in turn). `accept(token)` returns false to stop after
   * that token; the step then in flight is drained and ignored. Returns the number of tokens taken (the one
   * that stopped it included): the decode steps whose token was used.
   */
  async decodeGreedyPipelined(cache: WgslCache, row: number, first: number, pos: number, maxSteps: number, accept: (token: number) => boolean): Promise<number> {
    const { a, head } = this;
    if (this.world.size !== 1 || !head) throw new Error('decodeGreedyPipelined runs at tp 1, pp 1');
    const dev = this.gpu.device;
    const q = dev.queue;
    if (pos + maxSteps > cache.capacity) throw new Error(`positions up to ${pos + maxSteps} exceed the KV cache's ${cache.capacity}`);
    const t0 = performance.now();
    q.writeBuffer(a.ids, 0, Uint32Array.of(first));
    q.writeBuffer(a.headStep, 0, Uint32Array.of(1, 0, 0, 0));
    q.writeBuffer(a.sel, 0, Uint32Array.of(0));
    this.readRes2 ??= dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'read.res2' });
    const reads = [this.readRes, this.readRes2];
    let prev: { map: Promise<void>; buf: GPUBuffer } | undefined;
    let accepted = 0;
    let submitted = 0;
    const take = async (p: { map: Promise<void>; buf: GPUBuffer }) => {
      await p.map;
      const tok = new Uint32Array(p.buf.getMappedRange(0, 8))[0];
      p.buf.unmap();
      return tok;
    };
    let stopped = false;
    for (let s = 0; s < maxSteps && !stopped; s++) {
      // Queue order puts this write after step s - 1's commands, which read the previous value.
      q.writeBuffer(a.step, 0, Uint32Array.of(1, pos + s, row, cache.capacity));
      const enc = dev.createCommandEncoder();
      const prof = this.profiler(cache);
      const all = prof ? [...cache.ops.filter((op): op is Dispatch => !isReduce(op) && runs(op, 1)), ...head.logits, head.argmax] : [];
      if (prof) prof.encode(enc, all, all.map(() => 1));
      else {
        const pass = enc.beginComputePass();
        for (const op of cache.ops) if (!isReduce(op)) record(pass, op, 1);
        for (const op of head.logits) record(pass, op, 1);
        record(pass, head.argmax, 1);
        pass.end();
      }
      const buf = reads[s % 2];
      enc.copyBufferToBuffer(a.res, 0, buf, 0, 8);
      q.submit([enc.finish()]);
      if (prof) await prof.collect('decode', all);
      submitted++;
      const cur = { map: buf.mapAsync(GPUMapMode.READ, 0, 8), buf };
      if (prev) {
        accepted++;
        if (!accept(await take(prev))) stopped = true;
      }
      prev = cur;
    }
    if (prev) {
      const tok = await take(prev);
      if (!stopped) {
        accepted++;
        accept(tok);
      }
    }
    // Every pass submitted ran, the drained one too.
    this.stats.runs += this.engine.segmentCount * submitted;
    this.stats.run_ms += performance.now() - t0;
    this.stats.decode_forwards += submitted;
    this.stats.decode_ms += performance.now() - t0;
    return accepted;
  }

  /** One greedy decode step of row `row`: `token` at position `pos`; returns the next token (argmax over the whole vocabulary, ties to the lowest id). */
  async decodeGreedy(cache: WgslCache, row: number, token: number, pos: number): Promise<number> {
    return this.argmaxOverGroup(await this.run(cache, row, { ids: [token] }, 1, pos, [0], true));
  }

  /** This rank's [id, value] argmax merged over its stage's tp ranks: the highest value, ties to the lowest id. */
  private async argmaxOverGroup(r: Float32Array): Promise<number> {
    if (this.group.size === 1) return r[0];
    const all = await this.group.allGather(Float32Array.of(r[1], r[0]));
    let best = 0;
    for (let i = 1; i < all.length / 2; i++) {
      if (all[2 * i] > all[2 * best] || (all[2 * i] === all[2 * best] && all[2 * i + 1] < all[2 * best + 1])) best = i;
    }
    return all[2 * best + 1];
  }

  /** Tokens `ids` of batch row `row` from position pos0; logits [sel.length, vocab] at call positions `sel`. */
  async forwardRow(cache: WgslCache, row: number, ids: ArrayLike<number>, pos0: number, sel: number[]): Promise<Float32Array> {
    return this.rowLogits(cache, row, { ids }, ids.length, pos0, sel);
  }

  private async rowLogits(cache: WgslCache, row: number, input: StageInput, T: number, pos0: number, sel: number[]): Promise<Float32Array> {
    return this.gatherLogits(await this.run(cache, row, input, T, pos0, sel, false), sel.length);
  }

  async forward(req: ForwardRequest, cache?: WgslCache): Promise<Float32Array> {
    return (await this.forwardStage(req, cache)).logits!;
  }

  /**
   * The ONNX runner's forward contract (runtime.ts ForwardRequest, forwardStage): right-padded rows; without
   * a cache, attention sees only this call's tokens. `hiddenIn` (every stage but the first): the previous
   * stage's float32 [batch, seq, hidden]. Returns float32 logits [batch, npos, vocab] on the last stage, else
   * `hidden` [batch, seq, hidden] (a row's padding positions zero) for the next stage.
   */
  async forwardStage(req: ForwardRequest, cache?: WgslCache, hiddenIn?: Float32Array): Promise<{ logits?: Float32Array; hidden?: Float32Array }> {
    const { batch, seq, npos } = req;
    const H = this.d.H;
    this.checkStageInput(!!hiddenIn);
    if (hiddenIn && hiddenIn.length !== batch * seq * H) throw new Error(`hidden states of ${hiddenIn.length} floats, expected [${batch}, ${seq}, ${H}]`);
    const own = cache ?? this.newCache(batch, seq);
    try {
      const V = this.vocabSize;
      const logits = this.head ? new Float32Array(batch * npos * V) : undefined;
      const hidden = this.head ? undefined : new Float32Array(batch * seq * H);
      for (let b = 0; b < batch; b++) {
        const { past, T, input } = this.rowInput(req, b, hiddenIn);
        if (hidden) hidden.set(await this.run(own, b, input, T, past, [], false), b * seq * H);
        else {
          const sel = Array.from({ length: npos }, (_, i) => Math.min(req.positions[b * npos + i], T - 1));
          logits!.set(await this.rowLogits(own, b, input, T, past, sel), b * npos * V);
        }
      }
      return logits ? { logits } : { hidden };
    } finally {
      if (!cache) own.dispose();
    }
  }

  /**
   * Greedy decode on the last stage (../generate.ts PipelineRunner.greedyStage): each row's next token,
   * the argmax taken on the GPU, so 8 bytes are read back per row instead of its logits.
   */
  async greedyStage(req: ForwardRequest, cache: WgslCache, hiddenIn?: Float32Array): Promise<Int32Array> {
    if (!this.head || req.seq !== 1 || req.npos !== 1) throw new Error('greedyStage runs one-token passes on the last pipeline stage');
    this.checkStageInput(!!hiddenIn);
    const out = new Int32Array(req.batch);
    for (let b = 0; b < req.batch; b++) {
      const { past, input } = this.rowInput(req, b, hiddenIn);
      out[b] = await this.argmaxOverGroup(await this.run(cache, b, input, 1, past, [0], true));
    }
    return out;
  }

  /** A call's input fits this rank's stage: token ids on the first pipeline stage, the previous stage's hidden states on a later one. */
  private checkStageInput(hidden: boolean): void {
    if (hidden === this.shape.first) {
      throw new Error(this.shape.first ? 'the first pipeline stage starts from token ids, not hidden states' : 'a later pipeline stage starts from the previous stage\'s hidden states, not token ids');
    }
  }

  /** Row b of a right-padded request: its first position, token count and input (ids, or the previous stage's hidden states). */
  private rowInput(req: ForwardRequest, b: number, hiddenIn?: Float32Array): { past: number; T: number; input: StageInput } {
    const { seq } = req;
    const H = this.d.H;
    // Decode: one token at the row's last position; prefill: the row's valid tokens after a common past.
    const past = seq === 1 ? req.seqlensK[b] : req.totalSeq - seq;
    const T = seq === 1 ? 1 : Math.max(1, req.seqlensK[b] + 1 - past);
    const input: StageInput = hiddenIn
      ? { hidden: hiddenIn.subarray(b * seq * H, (b * seq + T) * H) }
      : { ids: Array.from({ length: T }, (_, i) => req.ids[b * seq + i]) };
    return { past, T, input };
  }

  private async gatherLogits(local: Float32Array, rows: number): Promise<Float32Array> {
    const V = this.vocabSize;
    const vr = this.d.Vr;
    const tp = this.group.size;
    const all = tp === 1 ? local : await traceSpan('allgather', () => this.group.allGather(local));
    if (tp === 1 && vr === V) return local;
    const per = this.shape.vocabPerRank;
    const out = new Float32Array(rows * V);
    for (let r = 0; r < tp; r++) {
      const width = Math.min(vr, V - r * per);
      if (width <= 0) break;
      for (let i = 0; i < rows; i++) out.set(all.subarray(r * rows * vr + i * vr, r * rows * vr + i * vr + width), i * V + r * per);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.gpu.device.queue.onSubmittedWorkDone();
  }
}
