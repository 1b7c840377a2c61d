// The prefill GEMM: y[t, n] = Σ_k x[t, k] · W[n, k] for a whole prompt at once, with the same bindings
// and epilogues as the GEMV (gemv.ts), which it replaces when T > 1.

import { STEP_WGSL } from './common.js';
import type { GemvEpilogue } from './gemv.js';

/**
 * Prefill GEMM (TPRUN_WGSL_PREFILL=tiled): a 32-token × 64-row output tile per 256-thread workgroup, the
 * x and W slices of 32 along K staged in workgroup memory (W unpacked to f32 once per tile), 2 tokens ×
 * 4 rows per thread, f32 accumulation; the classic shared-memory tiling of ggml-vulkan's mul_mm.comp
 * (ggml-org/llama.cpp), here without its cooperative-matrix paths. Same bindings and epilogues as the GEMV.
 */
export const TILE_T = 32;
export const TILE_N = 64;
export function gemmShader(epilogue: GemvEpilogue): string {
  const pairs = epilogue === 'swiglu' ? 2 : 1;
  const out = epilogue === 'swiglu'
    ? 'let a = acc[(i * 4u + r) * 2u]; let b = acc[(i * 4u + r) * 2u + 1u]; y[yi] = a / (1.0 + exp(-a)) * b;'
    : epilogue === 'add' ? 'y[yi] += acc[i * 4u + r];' : 'y[yi] = acc[i * 4u + r];';
  return /* wgsl */ `
${STEP_WGSL}
struct P { K8: u32, n: u32, n0: u32, ys: u32, xs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
var<workgroup> xt: array<vec4<f32>, ${TILE_T * 8}>;          // [token][k / 4], 32 k per slice
var<workgroup> wt: array<f32, ${pairs * TILE_N * 33}>;       // [q][row][k], rows padded to 33 against bank conflicts

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t0 = wid.x * ${TILE_T}u;
  let o0 = wid.y * ${TILE_N}u;
  let tx = tid % 16u; // rows tx * 4 .. + 4
  let ty = tid / 16u; // tokens ty * 2 .. + 2
  var acc: array<f32, ${8 * pairs}>;
  let K4 = p.K8 * 2u;
  for (var k8 = 0u; k8 < p.K8; k8 += 4u) {
    // x: 32 tokens × 8 vec4 = one vec4 per thread.
    {
      let t = min(t0 + tid / 8u, st.T - 1u);
      let k4 = k8 * 2u + tid % 8u;
      xt[tid] = select(vec4<f32>(0.0), x[t * p.xs + min(k4, K4 - 1u)], k4 < K4);
    }
    // W: 64 rows × 4 vec4<u32> (8 halves each) per matrix = one per thread per matrix.
    for (var q = 0u; q < ${pairs}u; q++) {
      let row = tid / 4u;
      let kq = k8 + tid % 4u;
      let o = min(o0 + row, p.n - 1u) + q * p.n;
      let wv = select(vec4<u32>(0u), w[o * p.K8 + min(kq, p.K8 - 1u)], kq < p.K8);
      let b = (q * ${TILE_N}u + row) * 33u + (tid % 4u) * 8u;
      let a0 = unpack2x16float(wv.x); let a1 = unpack2x16float(wv.y); let a2 = unpack2x16float(wv.z); let a3 = unpack2x16float(wv.w);
      wt[b] = a0.x; wt[b + 1u] = a0.y; wt[b + 2u] = a1.x; wt[b + 3u] = a1.y;
      wt[b + 4u] = a2.x; wt[b + 5u] = a2.y; wt[b + 6u] = a3.x; wt[b + 7u] = a3.y;
    }
    workgroupBarrier();
    for (var k4 = 0u; k4 < 8u; k4++) {
      let xa = xt[(ty * 2u) * 8u + k4];
      let xb = xt[(ty * 2u + 1u) * 8u + k4];
      for (var r = 0u; r < 4u; r++) {
        for (var q = 0u; q < ${pairs}u; q++) {
          let b = (q * ${TILE_N}u + tx * 4u + r) * 33u + k4 * 4u;
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
