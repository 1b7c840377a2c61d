// Float16 matrix × float32 activations, the decoder's every linear: y[t, n] = Σ_k x[t, k] · W[n, k].
//
// Weights are stored [N, K] (the transpose of the engine's [K, N] MatMul initializer, done once on the
// GPU at load: transposeShader) so that one workgroup streams whole contiguous rows, 16 bytes (8 halves)
// per thread per load, with f32 accumulation. Each workgroup owns ROWS output rows and TM tokens: at
// decode (TM 1) that is llama.cpp's mul_mat_vec layout (ggml-vulkan's mul_mat_vec.comp: a few rows
// per workgroup, threads striding along K, a subgroup/shared-memory reduction); at prefill (TM 8) each
// loaded weight is reused for 8 tokens. Epilogues: store, add into y (the residual stream), or SwiGLU
// over a fused gate/up weight (rows [0, n) = mlp.fc = HF gate_proj, rows [n, 2n) = mlp.gate = up_proj).

import { STEP_WGSL } from './common.js';

export type GemvEpilogue = 'store' | 'add' | 'swiglu';

/** `unroll`: K strides each thread loads before it multiplies (that many 16-byte loads per row in flight). */
export interface GemvVariant { rows: number; tm: number; epilogue: GemvEpilogue; subgroups: boolean; wg: number; unroll?: number }

export function gemvShader(v: GemvVariant): string {
  const { rows: R, tm: TM, wg: WG } = v;
  const U = v.unroll ?? 1;
  const pairs = v.epilogue === 'swiglu' ? 2 : 1;
  const A = R * TM * pairs; // accumulators per thread
  // One slot per subgroup and accumulator (WebGPU subgroups have at least 4 lanes), else one per thread.
  const redSize = v.subgroups ? Math.max(WG / 4, 1) * A : WG * A;
  // With subgroups: tid / subgroup_size is taken as the subgroup's index, i.e. subgroups are runs of
  // consecutive local indices, as every Vulkan driver forms them for a 1-D workgroup (verified on
  // lavapipe; TPRUN_WGSL_SUBGROUPS=0 selects the shared-memory tree, which assumes nothing).
  const reduce = v.subgroups ? /* wgsl */ `
  for (var i = 0u; i < ${A}u; i++) { acc[i] = subgroupAdd(acc[i]); }
  let nsg = ${WG}u / sgsize;
  if (sglane == 0u) { for (var i = 0u; i < ${A}u; i++) { red[(tid / sgsize) * ${A}u + i] = acc[i]; } }
  workgroupBarrier();
  if (tid < ${A}u) {
    var s = 0.0;
    for (var j = 0u; j < nsg; j++) { s += red[j * ${A}u + tid]; }
    red[tid] = s;
  }
  workgroupBarrier();` : /* wgsl */ `
  for (var i = 0u; i < ${A}u; i++) { red[tid * ${A}u + i] = acc[i]; }
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (tid < s) { for (var i = 0u; i < ${A}u; i++) { red[tid * ${A}u + i] += red[(tid + s) * ${A}u + i]; } }
    workgroupBarrier();
  }
`;
  const out = v.epilogue === 'swiglu'
    ? 'let a = red[i * 2u]; let b = red[i * 2u + 1u]; y[yi] = a / (1.0 + exp(-a)) * b;'
    : v.epilogue === 'add' ? 'y[yi] += red[i];' : 'y[yi] = red[i];';
  return /* wgsl */ `${v.subgroups ? 'enable subgroups;' : ''}
${STEP_WGSL}
// K8: K / 8; n: output rows of this chunk; n0: their first output column in y; ys: y's row stride; xs: x's row stride / 4.
struct P { K8: u32, n: u32, n0: u32, ys: u32, xs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
var<workgroup> red: array<f32, ${redSize}>;

fn dot8(wv: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
  return dot(vec4<f32>(unpack2x16float(wv.x), unpack2x16float(wv.y)), x0) + dot(vec4<f32>(unpack2x16float(wv.z), unpack2x16float(wv.w)), x1);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32${v.subgroups ? ', @builtin(subgroup_size) sgsize: u32, @builtin(subgroup_invocation_id) sglane: u32' : ''}) {
  // Token tiles along x: the workgroups sharing a row block run back to back, so at prefill the
  // weight rows they all read come from L2 after the first.
  let o0 = wid.y * ${R}u;
  let t0 = wid.x * ${TM}u;
  var acc: array<f32, ${A}>;
  // U strides per iteration: all of their weight loads are issued before the first multiply, so a
  // thread keeps U·ROWS 16-byte loads in flight (past the end of K a stride is clamped and weighted 0).
  for (var k0 = tid; k0 < p.K8; k0 += ${WG * U}u) {
    var wv: array<vec4<u32>, ${U * R * pairs}>;
    var ok: array<f32, ${U}>;
    for (var u = 0u; u < ${U}u; u++) {
      let k = min(k0 + u * ${WG}u, p.K8 - 1u);
      ok[u] = select(0.0, 1.0, k0 + u * ${WG}u < p.K8);
      for (var r = 0u; r < ${R}u; r++) {
        let o = min(o0 + r, p.n - 1u);
        for (var q = 0u; q < ${pairs}u; q++) { wv[(u * ${R}u + r) * ${pairs}u + q] = w[(o + q * p.n) * p.K8 + k]; }
      }
    }
    for (var u = 0u; u < ${U}u; u++) {
      let k = min(k0 + u * ${WG}u, p.K8 - 1u);
      var xv: array<vec4<f32>, ${2 * TM}>;
      for (var j = 0u; j < ${TM}u; j++) {
        let t = min(t0 + j, st.T - 1u);
        xv[2u * j] = x[t * p.xs + 2u * k] * ok[u];
        xv[2u * j + 1u] = x[t * p.xs + 2u * k + 1u] * ok[u];
      }
      for (var r = 0u; r < ${R}u; r++) {
        for (var q = 0u; q < ${pairs}u; q++) {
          let wq = wv[(u * ${R}u + r) * ${pairs}u + q];
          for (var j = 0u; j < ${TM}u; j++) {
            acc[(r * ${TM}u + j) * ${pairs}u + q] += dot8(wq, xv[2u * j], xv[2u * j + 1u]);
          }
        }
      }
    }
  }
${reduce}
  if (tid < ${R * TM}u) {
    let i = tid;
    let r = i / ${TM}u;
    let t = t0 + i % ${TM}u;
    if (o0 + r < p.n && t < st.T) {
      let yi = t * p.ys + p.n0 + o0 + r;
      ${out}
    }
  }
}
`;
}

/**
 * [K, N] float16 (a slab of `ks` rows starting at row k0, in `src`) → rows [n0, n0 + nc) of the [N, K]
 * chunk `dst`, placed from row `d0` on. One thread per output word (two halves along K).
 */
export const TRANSPOSE_WGSL = /* wgsl */ `
struct P { N: u32, K: u32, k0: u32, ks: u32, n0: u32, nc: u32, d0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn half(i: u32) -> u32 { return (src[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu; }

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let kk = g.x * 2u; // within the slab
  let n = g.y + g.z * 65535u;
  if (kk >= p.ks || n >= p.nc) { return; }
  let col = p.n0 + n;
  let lo = half(kk * p.N + col);
  let hi = half((kk + 1u) * p.N + col);
  dst[((p.d0 + n) * p.K + p.k0 + kk) >> 1u] = lo | (hi << 16u);
}
`;
