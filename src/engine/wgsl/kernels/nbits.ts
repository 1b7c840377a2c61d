// Prefill GEMM over onnxruntime MatMulNBits weights (int4 / int8 blocks): y[t, n] = Σ_k x[t, k] · W[n, k]
// with W[n, k] = (q[n, k] − zp[n, k / bs]) · scale[n, k / bs] · g[k] (g: the AWQ prequant factor, where the
// engine has one; it multiplies x, so it can be folded into the dequantized weight column).
//
// The weight layout is MatMulNBits' own (microsoft/onnxruntime docs/ContribOperators.md, MatMulNBits;
// contrib_ops/cpu/quantization/matmul_nbits.cc): B [N, K / bs, bs · bits / 8] bytes, i.e. each output
// row's K values contiguous, 4-bit values two per byte with the lower k in the low nibble; scales
// [N · K / bs]; zero points default 2^(bits − 1) (8 or 128). Rows are padded to whole 16-byte units at
// load (upload-nbits.ts), so the decode GEMV (gemv.ts, fmt q4 / q8) streams them with vec4<u32> loads.
//
// Dequantize-on-load into the same tiling as the float16 prefill GEMM (32 tokens × 64 rows per 256-thread
// workgroup, K slices of 32 in workgroup memory, 2 tokens × 4 rows per thread; ggml-vulkan's mul_mm.comp
// tiling): each weight is read once per 32 tokens and unpacked once per tile. The int4 / int8 prefill where
// the adapter has no f16 subgroup matrices, or with TPRUN_WGSL_PREFILL_Q=tiled; elsewhere gemm.ts's
// sgmatWsShader runs these weights on subgroup matrices, dequantizing them as it stages them.

import { STEP_WGSL } from './common.js';
import { extraBindings, GEMV_PARAMS_WGSL, type GemvEpilogue, type GemvPrologue, type WeightFormat } from './gemv.js';

/** The quantized GEMM's output tile: 32 tokens × 64 rows per workgroup (its dispatch is sized by it). */
export const NBITS_TILE = { tm: 32, rows: 64 } as const;

export function nbitsGemmShader(fmt: Exclude<WeightFormat, 'f16'>, epilogue: GemvEpilogue, prologue: GemvPrologue): string {
  if (prologue === 'rms') throw new Error('the prefill GEMM reads normed activations (RMSNorm is fused into the decode GEMV only)');
  const pairs = epilogue === 'swiglu' ? 2 : 1;
  const bits = fmt === 'q4' ? 4 : 8;
  const KPW = 32 / bits; // k per u32 word
  const WPR = 32 / KPW; // words per row per 32-wide K slice
  const WPU = 4; // words per 16-byte unit
  const out = epilogue === 'swiglu'
    ? 'let a = acc[(i * 4u + r) * 2u]; let b = acc[(i * 4u + r) * 2u + 1u]; y[yi] = a / (1.0 + exp(-a)) * b;'
    : epilogue === 'add' ? 'y[yi] += acc[i * 4u + r];' : 'y[yi] = acc[i * 4u + r];';
  const unpack = Array.from({ length: KPW }, (_, e) =>
    `wt[b + ${e}u] = select(0.0, (f32((wd >> ${e * bits}u) & ${(1 << bits) - 1}u) - z) * s${prologue === 'scale' ? ` * g[q * p.K + min(kk + ${e}u, p.K - 1u)]` : ''}, kk + ${e}u < p.K);`).join('\n        ');
  return /* wgsl */ `
${STEP_WGSL}
${GEMV_PARAMS_WGSL}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${extraBindings(fmt, prologue, 'array<f32>')}
var<workgroup> xt: array<vec4<f32>, 256>;               // [token][k / 4], 32 k per slice
var<workgroup> wt: array<f32, ${pairs * 64 * 33}>;       // [q][row][k], rows padded to 33 against bank conflicts

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t0 = wid.x * 32u;
  let o0 = wid.y * 64u;
  let tx = tid % 16u; // rows tx * 4 .. + 4
  let ty = tid / 16u; // tokens ty * 2 .. + 2
  var acc: array<f32, ${8 * pairs}>;
  let K4 = p.K / 4u;
  let KW = p.KU * ${WPU}u; // u32 words per (padded) row
  for (var kb = 0u; kb < p.K; kb += 32u) {
    {
      let t = min(t0 + tid / 8u, st.T - 1u);
      let k4 = kb / 4u + tid % 8u;
      xt[tid] = select(vec4<f32>(0.0), x[t * p.xs + min(k4, K4 - 1u)], k4 < K4);
    }
    for (var q = 0u; q < ${pairs}u; q++) {
      for (var i = tid; i < ${64 * WPR}u; i += 256u) {
        let row = i / ${WPR}u;
        let wi = i % ${WPR}u;
        let o = min(o0 + row, p.n - 1u) + q * p.n;
        let kk = kb + wi * ${KPW}u; // the word's first k
        let wd = w[o * KW + min(kk / ${KPW}u, KW - 1u)];
        let blk = o * p.nb + min(kk / p.bs, p.nb - 1u);
        let s = sc[blk];
        var z = p.zp;
        if (p.hasZp != 0u) { z = zb[blk]; }
        let b = (q * 64u + row) * 33u + wi * ${KPW}u;
        ${unpack}
      }
    }
    workgroupBarrier();
    for (var k4 = 0u; k4 < 8u; k4++) {
      let xa = xt[(ty * 2u) * 8u + k4];
      let xb = xt[(ty * 2u + 1u) * 8u + k4];
      for (var r = 0u; r < 4u; r++) {
        for (var q = 0u; q < ${pairs}u; q++) {
          let b = (q * 64u + tx * 4u + r) * 33u + k4 * 4u;
          let wv = vec4<f32>(wt[b], wt[b + 1u], wt[b + 2u], wt[b + 3u]);
          acc[r * ${pairs}u + q] += dot(xa, wv);
          acc[(4u + r) * ${pairs}u + q] += dot(xb, wv);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 2u; i++) {
    let t = t0 + ty * 2u + i;
    for (var r = 0u; r < 4u; r++) {
      let o = o0 + tx * 4u + r;
      if (t < st.T && o < p.n) {
        let yi = t * p.ys + p.n0 + o;
        ${out}
      }
    }
  }
}
`;
}
