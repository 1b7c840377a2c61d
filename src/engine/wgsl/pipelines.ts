/// <reference types="@webgpu/types" />
// Every compute pipeline of the WGSL runtime, compiled once per device, with the explicit bind group
// layouts their bind groups are made against.

import { layout, pipeline, type Slot } from './kernels/common.js';
import { gemvShader, TRANSPOSE_WGSL, type GemvEpilogue } from './kernels/gemv.js';
import { gemmShader, sgmatShader, sgmatTile, type SgmatConfig } from './kernels/gemm.js';
import { rmsNormShader } from './kernels/norm.js';
import { ROPE_WGSL } from './kernels/rope.js';
import { ATTENTION_WGSL } from './kernels/attention.js';
import { ATTENTION_PREFILL_WGSL } from './kernels/attention-prefill.js';
import { ADD_WGSL, ARGMAX_WGSL, EMBED_WGSL } from './kernels/misc.js';
import { gemvShapes, prefillAttention, type GemvShape } from './variants.js';


export interface Kernel { bgl: GPUBindGroupLayout; p: GPUComputePipeline }

export class Pipelines {
  readonly gemv: Record<GemvEpilogue, { bgl: GPUBindGroupLayout; decode: GPUComputePipeline; prefill: GPUComputePipeline }>;
  /** The decode (one token) and prefill GEMV shapes (TPRUN_WGSL_GEMV / TPRUN_WGSL_PREFILL). */
  readonly shape: { decode: GemvShape; prefill: GemvShape };
  readonly transpose: Kernel;
  readonly norm: Kernel;
  readonly normGather: Kernel;
  readonly rope: Kernel;
  readonly attention: Kernel;
  /** Prompt attention per block of queries (same bindings as `attention`); undefined with TPRUN_WGSL_PREFILL_ATTN=query. */
  readonly attentionPrefill?: Kernel;
  readonly embed: Kernel;
  readonly add: Kernel;
  readonly argmax: Kernel;

  /** `sgmat`: the device's subgroup-matrix shape (gpu.ts), used by the prefill GEMM where TPRUN_WGSL_PREFILL asks for it. */
  constructor(device: GPUDevice, subgroups: boolean, sgmat?: SgmatConfig) {
    const shape = gemvShapes();
    const sg = shape.prefill.sgmat && sgmat ? { c: sgmat, split: shape.prefill.sgmat === 'split' } : undefined;
    if (sg) { const t = sgmatTile(sg.c, shape.prefill.rows); shape.prefill = { ...shape.prefill, rows: t.TN, tm: t.TT }; }
    else if (shape.prefill.sgmat) shape.prefill = { ...shape.prefill, sgmat: undefined }; // auto without subgroup matrices: tiled
    this.shape = shape;
    const k = (code: string, slots: Slot[], label: string): Kernel => {
      const bgl = layout(device, slots, label);
      return { bgl, p: pipeline(device, code, bgl, label) };
    };
    const gemv = (epilogue: GemvEpilogue) => {
      const bgl = layout(device, ['u', 'u', 'r', 'r', 'w'], `gemv.${epilogue}`);
      const make = (s: GemvShape) => pipeline(device, gemvShader({ ...s, epilogue, subgroups }), bgl, `gemv.${epilogue}.r${s.rows}.w${s.wg}.u${s.unroll}.tm${s.tm}`);
      const prefill = sg ? pipeline(device, sgmatShader(epilogue, sg.c, sg.split, shape.prefill.rows), bgl, `gemm.sgmat.${epilogue}`)
        : shape.prefill.tiled ? pipeline(device, gemmShader(epilogue, shape.prefill.tm, shape.prefill.rows), bgl, `gemm.${epilogue}.t${shape.prefill.tm}.n${shape.prefill.rows}`) : make(shape.prefill);
      return { bgl, decode: make(shape.decode), prefill };
    };
    this.gemv = { store: gemv('store'), add: gemv('add'), swiglu: gemv('swiglu') };
    this.transpose = k(TRANSPOSE_WGSL, ['u', 'r', 'w'], 'transpose');
    this.norm = k(rmsNormShader(false), ['u', 'u', 'r', 'r', 'w'], 'rmsnorm');
    this.normGather = k(rmsNormShader(true), ['u', 'u', 'r', 'r', 'w', 'r'], 'rmsnorm.gather');
    this.rope = k(ROPE_WGSL, ['u', 'u', 'w', 'r', 'r', 'w', 'w'], 'rope');
    this.attention = k(ATTENTION_WGSL, ['u', 'u', 'r', 'r', 'r', 'w'], 'attention');
    if (prefillAttention() === 'block') this.attentionPrefill = { bgl: this.attention.bgl, p: pipeline(device, ATTENTION_PREFILL_WGSL, this.attention.bgl, 'attention.prefill') };
    this.embed = k(EMBED_WGSL, ['u', 'u', 'r', 'r', 'w'], 'embed');
    this.add = k(ADD_WGSL, ['u', 'u', 'r', 'w'], 'add');
    this.argmax = k(ARGMAX_WGSL, ['u', 'r', 'w', 'w'], 'argmax');
  }
}
