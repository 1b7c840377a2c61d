/// <reference types="@webgpu/types" />
// The dispatch list of one forward pass over a rank's decoder, recorded the same way for every call:
// bind groups and their parameter uniforms are made once (per KV cache), and a call only writes the
// 16-byte Step uniform (tokens, first position, batch row, cache capacity) and its token ids. At tp > 1
// the list holds a `reduce` point after every row-parallel linear (and a vocab-parallel embedding):
// there the pass ends, the partial sum goes to the host, is all-reduced over the world and comes back.

import { InputError } from '../../core/errors.js';
import { bindGroup, uniform, type Dispatch } from './kernels/common.js';
import type { Pipelines } from './pipelines.js';
import type { GemvEpilogue, GemvPrologue } from './kernels/gemv.js';
import { ATTN_PREFILL_MAX_HEAD, ATTN_PREFILL_QB } from './kernels/attention-prefill.js';
import { onOff, prefillAttention } from './variants.js';
import type { GemvWeight } from './upload.js';

export interface Dims { H: number; Hq: number; Hkv: number; D: number; I: number; qkvN: number; Vr: number; layers: number; eps: number }

/**
 * inNormG / postNormG: the norm weight (⊙ the consuming linear's prequant factor, per gate/up part) that
 * the decode GEMV applies to the raw residual when RMSNorm is fused into it.
 */
export interface LayerWeights { inNorm: GPUBuffer; qkv: GemvWeight; dense: GemvWeight; postNorm: GPUBuffer; gateUp: GemvWeight; proj: GemvWeight; inNormG: GPUBuffer; postNormG: GPUBuffer }

export interface ModelWeights {
  embed: { chunks: { buf: GPUBuffer; r0: number; rows: number }[] };
  /** First vocabulary id of this rank's embedding rows (vocab-parallel), else 0. */
  embedOffset: number;
  layers: LayerWeights[];
  cos: GPUBuffer;
  sin: GPUBuffer;
}

/** ln_f and lm_head: held by the last pipeline stage only. */
export interface HeadWeights { lnf: GPUBuffer; lmHead: GemvWeight }

/** Activations, sized for `maxT` tokens per call and `logitRows` rows of logits. */
export interface Acts {
  maxT: number;
  logitRows: number;
  step: GPUBuffer;
  headStep: GPUBuffer;
  ids: GPUBuffer;
  sel: GPUBuffer;
  resid: GPUBuffer;
  normed: GPUBuffer;
  qkv: GPUBuffer;
  attn: GPUBuffer;
  mlp: GPUBuffer;
  partial: GPUBuffer;
  hf: GPUBuffer;
  logits: GPUBuffer;
  res: GPUBuffer;
}

/** A point where the pass stops for an all-reduce of `buf`'s first T·n floats. */
export interface Reduce { reduce: GPUBuffer; n: number }
export type Op = Dispatch | Reduce;

export function isReduce(op: Op): op is Reduce { return 'reduce' in op; }

export function allocActs(device: GPUDevice, d: Dims, maxT: number, maxBinding: number): Acts {
  const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buf = (floats: number, label: string) => device.createBuffer({ size: Math.max(16, floats * 4), usage: S, label });
  const logitRows = Math.max(1, Math.min(maxT, Math.floor(maxBinding / (d.Vr * 4))));
  const U = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
  return {
    maxT,
    logitRows,
    step: device.createBuffer({ size: 16, usage: U, label: 'step' }),
    headStep: device.createBuffer({ size: 16, usage: U, label: 'headStep' }),
    ids: buf(maxT, 'ids'),
    sel: buf(maxT, 'sel'),
    resid: buf(maxT * d.H, 'resid'),
    normed: buf(maxT * d.H, 'normed'),
    qkv: buf(maxT * d.qkvN, 'qkv'),
    attn: buf(maxT * d.Hq * d.D, 'attn'),
    mlp: buf(maxT * d.I, 'mlp'),
    partial: buf(maxT * d.H, 'partial'),
    hf: buf(logitRows * d.H, 'hf'),
    logits: buf(logitRows * d.Vr, 'logits'),
    res: buf(4, 'argmax'),
  };
}

/**
 * How many position ranges a decode step's attention is split into (flash-decoding): TPRUN_WGSL_ATTN_SPLIT=N,
 * else one per 64 positions of the cache, at most 8 (a decode step has only `heads` workgroups otherwise).
 */
export function attentionSplits(capacity: number, env: NodeJS.ProcessEnv = process.env): number {
  const v = env.TPRUN_WGSL_ATTN_SPLIT;
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new InputError(`TPRUN_WGSL_ATTN_SPLIT=${v}: an integer from 1 (no split) to 64`);
    return n;
  }
  return Math.min(8, Math.max(1, Math.floor(capacity / 64)));
}

export class OpBuilder {
  /** Uniforms made for the ops (destroyed with them). */
  readonly owned: GPUBuffer[] = [];
  /** RMSNorm fused into the decode GEMVs that read its output (TPRUN_WGSL_FUSE_NORM=0: a norm dispatch each, as at prefill). */
  readonly fuseNorm: boolean;
  constructor(private device: GPUDevice, private pl: Pipelines, private d: Dims, private a: Acts, private tp: number, env: NodeJS.ProcessEnv = process.env) {
    this.fuseNorm = onOff('TPRUN_WGSL_FUSE_NORM', env);
  }

  private u(words: (number | { f: number })[], label: string): GPUBuffer {
    const b = uniform(this.device, words, label);
    this.owned.push(b);
    return b;
  }

  /**
   * y = x · Wᵀ (+ epilogue). `pro`: the prologue ('scale': x ⊙ g; 'rms': RMSNorm of x with weight g, decode
   * only); without one, a quantized linear with a prequant factor scales x by it.
   */
  gemv(w: GemvWeight, x: GPUBuffer, y: GPUBuffer, epilogue: GemvEpilogue, ys: number, name: string, step = this.a.step, pro?: { prologue: GemvPrologue; g: GPUBuffer; only?: 'decode' | 'prefill' }): Dispatch[] {
    const prologue = pro?.prologue ?? (w.preBuf ? 'scale' : 'none');
    const g = pro?.g ?? w.preBuf;
    const k = this.pl.gemv(w.fmt, epilogue, prologue);
    const quant = w.fmt !== 'f16';
    return w.chunks.map((c) => ({
      name,
      ...(pro?.only ? { only: pro.only } : {}),
      p: (T: number) => (T === 1 ? k.decode : k.prefill!),
      g: bindGroup(this.device, k.bgl, [
        this.u([w.KU, c.n, c.n0, ys, w.K / 4, w.K, w.bs, w.nb, { f: this.d.eps }, { f: w.zp }, w.hasZp ? 1 : 0], 'gemv.p'), step, c.buf, x, y,
        ...(quant ? [c.sc!, c.zb ?? c.sc!] : []), ...(prologue !== 'none' ? [g!] : []),
      ], 'gemv'),
      size: (T: number) => {
        const s = T === 1 ? k.decodeTile : k.prefillTile;
        return [Math.ceil(T / s.tm), Math.ceil(c.n / s.rows)];
      },
    }));
  }

  /** RMSNorm then a linear: at decode one fused GEMV over the residual (when fuseNorm), at prefill the norm dispatch and the GEMV / GEMM. */
  normedGemv(norm: GPUBuffer, normG: GPUBuffer, w: GemvWeight, y: GPUBuffer, epilogue: GemvEpilogue, ys: number, name: string): Dispatch[] {
    const { a } = this;
    if (!this.fuseNorm) return [this.norm(norm, a.resid, a.normed), ...this.gemv(w, a.normed, y, epilogue, ys, name)];
    return [
      { ...this.norm(norm, a.resid, a.normed), only: 'prefill' },
      ...this.gemv(w, a.normed, y, epilogue, ys, name, a.step, w.preBuf ? { prologue: 'scale', g: w.preBuf, only: 'prefill' } : { prologue: 'none', g: a.normed, only: 'prefill' }),
      ...this.gemv(w, a.resid, y, epilogue, ys, `${name}+norm`, a.step, { prologue: 'rms', g: normG, only: 'decode' }),
    ];
  }

  norm(w: GPUBuffer, x: GPUBuffer, y: GPUBuffer): Dispatch {
    return {
      name: 'rmsnorm',
      p: () => this.pl.norm.p,
      g: bindGroup(this.device, this.pl.norm.bgl, [this.u([this.d.H, { f: this.d.eps }], 'norm.p'), this.a.step, x, w, y], 'norm'),
      size: (T) => [T],
    };
  }

  /** Row-parallel output: into the residual stream at tp 1; at tp > 1 into `partial`, all-reduced, then added. */
  rowParallel(w: GemvWeight, x: GPUBuffer, name: string): Op[] {
    if (this.tp === 1) return this.gemv(w, x, this.a.resid, 'add', this.d.H, name);
    const H = this.d.H;
    return [
      ...this.gemv(w, x, this.a.partial, 'store', H, name),
      { reduce: this.a.partial, n: H },
      {
        name: 'add',
        p: () => this.pl.add.p,
        g: bindGroup(this.device, this.pl.add.bgl, [this.u([H], 'add.p'), this.a.step, this.a.partial, this.a.resid], 'add'),
        size: (T) => { const n = Math.ceil((T * H) / 64); return [Math.min(n, 65535), Math.ceil(n / 65535)]; },
      },
    ];
  }

  embed(w: ModelWeights, vocabParallel: boolean): Op[] {
    const H2 = this.d.H / 2;
    const ops: Op[] = w.embed.chunks.map((c, i) => ({
      name: 'embed',
      p: () => this.pl.embed.p,
      g: bindGroup(this.device, this.pl.embed.bgl, [this.u([H2, w.embedOffset + c.r0, c.rows, i === 0 ? 1 : 0], 'embed.p'), this.a.step, this.a.ids, c.buf, this.a.resid], 'embed'),
      size: (T: number) => [Math.ceil(H2 / 64), T],
    }));
    if (vocabParallel) ops.push({ reduce: this.a.resid, n: this.d.H });
    return ops;
  }

  /** Everything from the embedding to the last layer's residual stream, against one KV cache of `capacity` positions. */
  body(w: ModelWeights, kv: { k: GPUBuffer; v: GPUBuffer }[], vocabParallel: boolean, capacity = 1): Op[] {
    const { d, a, pl } = this;
    const ops: Op[] = this.embed(w, vocabParallel);
    const rope = this.u([d.Hq, d.Hkv, d.D, d.qkvN], 'rope.p');
    const S = attentionSplits(capacity);
    const attn = this.u([d.Hq, d.Hkv, d.D, d.qkvN, { f: 1 / Math.sqrt(d.D) }, S], 'attention.p');
    // The split's partials ([heads][S][D + 2]), shared by the layers (each combines before the next reads).
    let part: GPUBuffer | undefined;
    if (S > 1) {
      part = this.device.createBuffer({ size: d.Hq * S * (d.D + 2) * 4, usage: GPUBufferUsage.STORAGE, label: 'attention.part' });
      this.owned.push(part);
    }
    const ropeThreads = ((d.Hq + d.Hkv) * d.D) / 2 + d.Hkv * d.D;
    // A prompt's attention (TPRUN_WGSL_PREFILL_ATTN, variants.ts prefillAttention): per KV head group where a tile fits
    // the head size, else per block of queries (head sizes up to ATTN_PREFILL_MAX_HEAD), else the decode kernel per query.
    // A decode step (one token) always runs the decode kernels.
    const kind = prefillAttention();
    const group = kind === 'group' ? pl.groupAttention(d) : undefined;
    const block = !group && kind !== 'query' && d.D <= ATTN_PREFILL_MAX_HEAD;
    const prefillAttn = group ?? (block ? { p: pl.attentionPrefill.p, size: (T: number): [number, number] => [d.Hq, Math.ceil(T / ATTN_PREFILL_QB)] } : undefined);
    w.layers.forEach((l, i) => {
      ops.push(...this.normedGemv(l.inNorm, l.inNormG, l.qkv, a.qkv, 'store', d.qkvN, 'gemv.qkv'));
      ops.push({
        name: 'rope',
        p: () => pl.rope.p,
        g: bindGroup(this.device, pl.rope.bgl, [rope, a.step, a.qkv, w.cos, w.sin, kv[i].k, kv[i].v], 'rope'),
        size: (T) => [Math.ceil(ropeThreads / 64), T],
      });
      ops.push({
        name: 'attention',
        ...(part ? { only: 'prefill' as const } : {}),
        p: (T) => (T > 1 && prefillAttn ? prefillAttn.p : pl.attention.p),
        g: bindGroup(this.device, pl.attention.bgl, [attn, a.step, a.qkv, kv[i].k, kv[i].v, a.attn], 'attention'),
        size: (T) => (T > 1 && prefillAttn ? prefillAttn.size(T) : [d.Hq, T]),
      });
      if (part) {
        ops.push({
          name: 'attention.split', only: 'decode',
          p: () => pl.attentionSplit.p,
          g: bindGroup(this.device, pl.attentionSplit.bgl, [attn, a.step, a.qkv, kv[i].k, kv[i].v, part], 'attention.split'),
          size: () => [d.Hq, 1, S],
        }, {
          name: 'attention.combine', only: 'decode',
          p: () => pl.attentionCombine.p,
          g: bindGroup(this.device, pl.attentionCombine.bgl, [attn, part, a.attn], 'attention.combine'),
          size: () => [d.Hq],
        });
      }
      ops.push(...this.rowParallel(l.dense, a.attn, 'gemv.o'));
      ops.push(...this.normedGemv(l.postNorm, l.postNormG, l.gateUp, a.mlp, 'swiglu', d.I, 'gemv.gate_up'));
      ops.push(...this.rowParallel(l.proj, a.mlp, 'gemv.down'));
    });
    return ops;
  }

  /** ln_f on the rows listed in `sel`, lm_head, and (greedy) the argmax of the first row. Sized by the head's row count. */
  head(w: HeadWeights, argmaxOver: number, vocabOffset: number): { logits: Dispatch[]; argmax: Dispatch } {
    const { d, a, pl } = this;
    const norm: Dispatch = {
      name: 'ln_f',
      p: () => pl.normGather.p,
      g: bindGroup(this.device, pl.normGather.bgl, [this.u([d.H, { f: d.eps }], 'lnf.p'), a.headStep, a.resid, w.lnf, a.hf, a.sel], 'ln_f'),
      size: (n) => [n],
    };
    const argmax: Dispatch = {
      name: 'argmax',
      p: () => pl.argmax.p,
      g: bindGroup(this.device, pl.argmax.bgl, [this.u([argmaxOver, vocabOffset], 'argmax.p'), a.logits, a.ids, a.res], 'argmax'),
      size: () => [1],
    };
    return { logits: [norm, ...this.gemv(w.lmHead, a.hf, a.logits, 'store', d.Vr, 'gemv.lm_head', a.headStep)], argmax };
  }

  destroy(): void { for (const b of this.owned) b.destroy(); }
}
