/// <reference types="@webgpu/types" />
// Every compute pipeline of the WGSL runtime, compiled once per device, with the explicit bind group
// layouts their bind groups are made against.

import { layout, pipeline, type Slot } from './kernels/common.js';
import { gemvShader, gemvSlots, TRANSPOSE_WGSL, type GemvEpilogue, type GemvPrologue, type WeightFormat } from './kernels/gemv.js';
import { gemmShader, sgmatShader, sgmatTile, sgmatWsShader, wsBytes, wsDispatchTile, wsLayout, type SgmatConfig, type WsTile } from './kernels/gemm.js';
import { InputError } from '../../core/errors.js';
import { NBITS_TILE, nbitsGemmShader } from './kernels/nbits.js';
import { rmsNormShader } from './kernels/norm.js';
import { ropeShader } from './kernels/rope.js';
import { ATTENTION_COMBINE_WGSL, attentionShader } from './kernels/attention.js';
import { attentionPrefillShader } from './kernels/attention-prefill.js';
import { attentionGroupShader, groupGrid, pickGroupTile, type GroupTile } from './kernels/attention-group.js';
import { ADD_WGSL, ARGMAX_WGSL, EMBED_WGSL } from './kernels/misc.js';
import { gemvShapes, PREFILL_TILED, type GemvShape } from './variants.js';


export interface Kernel { bgl: GPUBindGroupLayout; p: GPUComputePipeline }
/** A prompt's attention per KV head group (kernels/attention-group.ts): its pipeline (`attention`'s bindings), tile and grid. */
export interface GroupAttention {
  p: GPUComputePipeline;
  tile: GroupTile;
  /** Workgroups for a call of T tokens. */
  size: (T: number) => [number, number];
}
/** A linear's kernels: one bind group layout, the decode GEMV and (except for the fused-norm variant) the prefill one. */
export interface GemvKernel {
  bgl: GPUBindGroupLayout; decode: GPUComputePipeline; prefill: GPUComputePipeline | undefined;
  /** The prefill kernel's output tile (tokens × rows), which sizes its dispatch: the quantized GEMM has its own. */
  prefillTile: { tm: number; rows: number };
  /** The decode kernel's rows per workgroup (float16 and quantized weights have their own shapes). */
  decodeTile: { tm: number; rows: number };
}

export class Pipelines {
  private gemvs = new Map<string, GemvKernel>();
  /** The decode (one token; float16 and quantized) and prefill GEMV shapes (TPRUN_WGSL_GEMV / _GEMV_Q / _PREFILL), the dequantization (TPRUN_WGSL_Q_UNPACK). */
  readonly shape: ReturnType<typeof gemvShapes>;
  readonly transpose: Kernel;
  readonly norm: Kernel;
  readonly normGather: Kernel;
  readonly rope: Kernel;
  readonly attention: Kernel;
  /** Flash-decoding: the attention split over positions (decode), and the combine of its partials. */
  readonly attentionSplit: Kernel;
  readonly attentionCombine: Kernel;
  /**
   * Prompt attention per block of queries (same bindings as `attention`): TPRUN_WGSL_PREFILL_ATTN=block, or where
   * the grouped kernel has no tile for the head size; compiled on first use, since the default rarely needs it.
   */
  get attentionPrefill(): Kernel {
    this.blockAttn ??= { bgl: this.attention.bgl, p: pipeline(this.device, attentionPrefillShader(this.kv16), this.attention.bgl, 'attention.prefill') };
    return this.blockAttn;
  }
  private blockAttn?: Kernel;
  /**
   * Prompt attention per KV head group (the default of TPRUN_WGSL_PREFILL_ATTN) for this head shape, compiled on
   * first use per head size and tile (every layer and KV cache of the rank shares it); undefined where no tile
   * fits the device (the caller keeps the block kernel). `tile` overrides the device's default (a microbench
   * compares them).
   */
  groupAttention(dims: { Hq: number; Hkv: number; D: number }, tile?: GroupTile): GroupAttention | undefined {
    const lim = this.device.limits;
    const t = tile ?? pickGroupTile(dims.D, lim.maxComputeWorkgroupStorageSize, lim.maxComputeInvocationsPerWorkgroup);
    if (!t) return undefined;
    const key = `${dims.D}.${this.kv16 ? 'f16' : 'f32'}.r${t.RB}.k${t.KT}.p${t.RPT ?? 4}`;
    let p = this.groupAttn.get(key);
    if (!p) this.groupAttn.set(key, (p = pipeline(this.device, attentionGroupShader(dims.D, this.kv16, t), this.attention.bgl, `attention.group.${key}`)));
    return { p, tile: t, size: (T) => groupGrid(t, T, dims.Hq, dims.Hkv) };
  }
  private groupAttn = new Map<string, GPUComputePipeline>();
  readonly embed: Kernel;
  readonly add: Kernel;
  readonly argmax: Kernel;

  /** The prefill GEMM on subgroup matrices (gpu.ts found a shape and TPRUN_WGSL_PREFILL asks for it). */
  private sg: { c: SgmatConfig; split: boolean } | undefined;
  /** auto's tables (float16, int4 / int8) whose tiles this device cannot hold: that format prefills on the tiled GEMM. */
  private wsOff = new Set<'f16' | 'q'>();

  /** `kv16`: the KV cache is float16 (shader-f16). `sgmat`: the device's subgroup-matrix shape (gpu.ts). */
  constructor(private device: GPUDevice, private subgroups: boolean, readonly kv16 = false, sgmat?: SgmatConfig) {
    const shape = gemvShapes();
    this.sg = shape.prefill.sgmat && sgmat ? { c: sgmat, split: shape.prefill.sgmat === 'split' } : undefined;
    const ws = shape.prefill.ws;
    if (this.sg && ws) {
      // The staged kernel's tiles (the knob's, or auto's per epilogue): refused in one line where the
      // adapter's shape or workgroup memory cannot hold one; the default (auto) falls back to the tiled GEMM there instead.
      const wsEnv = process.env.TPRUN_WGSL_PREFILL_WS;
      const knob = shape.prefill.sgmat === 'auto' && wsEnv ? `TPRUN_WGSL_PREFILL_WS=${wsEnv}` : `TPRUN_WGSL_PREFILL=${process.env.TPRUN_WGSL_PREFILL ?? 'auto'}`;
      const { c } = this.sg;
      const lim = device.limits;
      // Why a weight format's tiles cannot run here (the first reason), per table: float16, and int4 / int8.
      const whyFor = (fmt: 'f16' | 'q4') => (['store', 'add', 'swiglu'] as const).map((ep) => {
        const t = this.wsTile(ep, fmt, shape.prefill)!;
        const lay = wsLayout(t, c, fmt);
        const bytes = wsBytes(t, c, ep === 'swiglu' ? 2 : 1);
        return typeof lay === 'string' ? `${lay} (the adapter's subgroup matrices are ${c.M}x${c.N}x${c.K})`
          : t.S * c.sg > lim.maxComputeInvocationsPerWorkgroup ? `${t.S} subgroups of ${c.sg} is over the device's ${lim.maxComputeInvocationsPerWorkgroup} invocations per workgroup`
            : bytes > lim.maxComputeWorkgroupStorageSize ? `the tile needs ${bytes} bytes of workgroup memory${ep === 'swiglu' ? ' (SwiGLU)' : ''}, the device allows ${lim.maxComputeWorkgroupStorageSize}` : undefined;
      }).find(Boolean);
      const why = { f16: whyFor('f16'), q: whyFor('q4') };
      if ((why.f16 || why.q) && (shape.prefill.sgmat !== 'auto' || wsEnv)) throw new InputError(`${knob}: ${why.f16 ?? why.q}`);
      // auto: a table whose tiles do not fit runs the tiled GEMM for its format alone (int4 tiles stage more
      // bytes than float16 ones, so a device may hold one table and not the other).
      if (why.f16 && why.q) { this.sg = undefined; shape.prefill = { ...PREFILL_TILED }; }
      else if (why.f16) this.wsOff.add('f16');
      else if (why.q) this.wsOff.add('q');
    } else if (this.sg) { const t = sgmatTile(this.sg.c, shape.prefill.rows); shape.prefill = { ...shape.prefill, rows: t.TN, tm: t.TT }; }
    else if (shape.prefill.sgmat) shape.prefill = { ...PREFILL_TILED }; // auto without subgroup matrices: tiled
    this.shape = shape;
    const k = (code: string, slots: Slot[], label: string): Kernel => {
      const bgl = layout(device, slots, label);
      return { bgl, p: pipeline(device, code, bgl, label) };
    };
    this.transpose = k(TRANSPOSE_WGSL, ['u', 'r', 'w'], 'transpose');
    this.norm = k(rmsNormShader(false), ['u', 'u', 'r', 'r', 'w'], 'rmsnorm');
    this.normGather = k(rmsNormShader(true), ['u', 'u', 'r', 'r', 'w', 'r'], 'rmsnorm.gather');
    this.rope = k(ropeShader(kv16), ['u', 'u', 'w', 'r', 'r', 'w', 'w'], 'rope');
    this.attention = k(attentionShader(kv16), ['u', 'u', 'r', 'r', 'r', 'w'], 'attention');
    this.attentionSplit = k(attentionShader(kv16, true), ['u', 'u', 'r', 'r', 'r', 'w'], 'attention.split');
    this.attentionCombine = k(ATTENTION_COMBINE_WGSL, ['u', 'r', 'w'], 'attention.combine');
    this.embed = k(EMBED_WGSL, ['u', 'u', 'r', 'r', 'w'], 'embed');
    this.add = k(ADD_WGSL, ['u', 'u', 'r', 'w'], 'add');
    this.argmax = k(ARGMAX_WGSL, ['u', 'r', 'w', 'w'], 'argmax');
  }

  /** The staged subgroup-matrix GEMM's tile for an epilogue (auto's table, or the knob's one tile), or undefined where it does not run. */
  private wsTile(epilogue: GemvEpilogue, fmt: WeightFormat, s: GemvShape = this.shape.prefill): WsTile | undefined {
    if (!this.sg || !s.ws || this.wsOff.has(fmt === 'f16' ? 'f16' : 'q')) return undefined;
    return 'f16' in s.ws ? s.ws[fmt === 'f16' ? 'f16' : 'q'][epilogue] : { TT: s.tm, TN: s.rows, ...s.ws };
  }

  /**
   * The kernels of a linear of weight format `fmt` (compiled on first use; the runner's load makes every
   * one the model uses inside a validation error scope). `rms` (RMSNorm fused in) runs at decode only:
   * prefill keeps the norm dispatch, whose cost is nothing next to the GEMM's.
   */
  gemv(fmt: WeightFormat, epilogue: GemvEpilogue, prologue: GemvPrologue = 'none'): GemvKernel {
    const key = `${fmt}.${epilogue}.${prologue}`;
    let k = this.gemvs.get(key);
    if (k) return k;
    const { device, subgroups, shape } = this;
    const bgl = layout(device, gemvSlots(fmt, prologue), `gemv.${key}`);
    const make = (s: GemvShape) => pipeline(device, gemvShader({ ...s, epilogue, subgroups, fmt, prologue, unpack: shape.unpack }), bgl, `gemv.${key}.r${s.rows}.w${s.wg}.u${s.unroll}.tm${s.tm}${fmt === 'f16' ? '' : `.${shape.unpack}`}`);
    let prefill: GPUComputePipeline | undefined;
    // int4 / int8 weights run the staged kernel wherever float16 ones do, unless TPRUN_WGSL_PREFILL_Q=tiled.
    const ws = prologue !== 'rms' && shape.prefill.tiled && (fmt === 'f16' || shape.prefillQ === 'auto') ? this.wsTile(epilogue, fmt) : undefined;
    if (prologue !== 'rms') {
      if (!shape.prefill.tiled) prefill = make(shape.prefill);
      else if (fmt === 'f16' && prologue !== 'none') throw new Error(`no float16 prefill GEMM with a ${prologue} prologue`);
      else if (ws) prefill = pipeline(device, sgmatWsShader(epilogue, this.sg!.c, ws, fmt, prologue, shape.unpack), bgl, `gemm.sgmat-ws.${key}.t${ws.TT}.n${ws.TN}.k${ws.KC}.s${ws.S}.z${ws.SK ?? 1}${fmt === 'f16' ? '' : `.${shape.unpack}`}`);
      else if (fmt === 'f16' && this.sg && !shape.prefill.ws) prefill = pipeline(device, sgmatShader(epilogue, this.sg.c, this.sg.split, shape.prefill.rows), bgl, `gemm.sgmat.${key}`);
      else if (fmt === 'f16') prefill = pipeline(device, gemmShader(epilogue, shape.prefill.tm, shape.prefill.rows), bgl, `gemm.${key}.t${shape.prefill.tm}.n${shape.prefill.rows}`);
      else prefill = pipeline(device, nbitsGemmShader(fmt, epilogue, prologue), bgl, `gemm.${key}`);
    }
    const prefillTile = ws ? wsDispatchTile(ws, epilogue) : fmt !== 'f16' && shape.prefill.tiled ? NBITS_TILE : { tm: shape.prefill.tm, rows: shape.prefill.rows };
    const dec = fmt === 'f16' ? shape.decode : shape.decodeQ;
    k = { bgl, decode: make(dec), prefill, prefillTile, decodeTile: { tm: dec.tm, rows: dec.rows } };
    this.gemvs.set(key, k);
    return k;
  }
}
