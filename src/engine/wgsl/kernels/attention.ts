// Causal attention of this call's tokens over the KV cache (GQA: query head h reads kv head
// h / (heads / kv_heads)), one workgroup per (head, token). Positions are taken in tiles whose scores sit
// in workgroup memory, with the running max / sum rescaled between tiles (flash-decoding's online
// softmax), so any context length fits. Output [T, heads·head], what the dense projection reads.
// A decode step has only heads × 1 workgroups, so each one is wide (256 threads): every thread scores
// its own positions, and for the weighted sum of V the threads split into WG / head groups that each
// take every groups-th position of the tile (one head dimension per thread), summed in workgroup memory
// at the end. With 64 threads and one position after another per thread, the H200 spent 95 µs per
// layer here at a 256-token context, half of a decode step (scripts/gpu/wgsl-profile.mjs).

import { STEP_WGSL } from './common.js';

const WG = 256;
const TILE = 512;
/** Largest head size the kernel holds (per-thread accumulators: MAXD / 64). */
export const ATTN_MAX_HEAD = 256;

/**
 * `kv16`: the KV cache holds float16 (rope.ts); scores, softmax and the V sum stay float32.
 * `split` (decode): flash-decoding's split over positions. Workgroup (h, 0, z) takes the z-th of p.S equal
 * ranges of the context and writes its unnormalised V sum with its running max and sum to `out` as
 * [h][z][D + 2]; ATTENTION_COMBINE_WGSL rescales the S partials into the output. A decode step then has
 * heads × S workgroups instead of heads, which a long context needs to fill a big GPU.
 */
export function attentionShader(kv16: boolean, split = false): string {
  const T = kv16 ? 'f16' : 'f32';
  return /* wgsl */ `${kv16 ? 'enable f16;' : ''}
${STEP_WGSL}
struct P { Hq: u32, Hkv: u32, D: u32, qs: u32, scale: f32, S: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<${T}>;
@group(0) @binding(4) var<storage, read> vc: array<${T}>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
var<workgroup> sc: array<f32, ${TILE}>;
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> qv: array<f32, ${ATTN_MAX_HEAD}>;
var<workgroup> part: array<f32, ${WG}>;

fn reduceMax(tid: u32, v: f32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] = max(red[tid], red[tid + k]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduceSum(tid: u32, v: f32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let t = wid.y;
  let ctx = st.pos0 + t + 1u;
  let kvh = h / (p.Hq / p.Hkv);
  let base = (st.row * p.Hkv + kvh) * st.cap * p.D;
  for (var d = tid; d < p.D; d += ${WG}u) { qv[d] = qkv[t * p.qs + h * p.D + d] * p.scale; }
  workgroupBarrier();
  var m = -3.0e38;
  var l = 0.0;
  // This thread's share of the V sum: head dimension d of every groups-th position from g on.
  let groups = max(1u, ${WG}u / p.D);
  let g = tid / p.D;
  let d = tid % p.D;
  let on = g < groups;
  var acc = 0.0;
  ${split ? 'let chunk = (ctx + p.S - 1u) / p.S; let start = min(ctx, wid.z * chunk); let end = min(ctx, start + chunk);' : 'let start = 0u; let end = ctx;'}
  for (var p0 = start; p0 < end; p0 += ${TILE}u) {
    let n = min(${TILE}u, end - p0);
    var lm = -3.0e38;
    for (var i = tid; i < n; i += ${WG}u) {
      let kb = base + (p0 + i) * p.D;
      var s = 0.0;
      for (var d = 0u; d < p.D; d++) { s += qv[d] * f32(kc[kb + d]); }
      sc[i] = s;
      lm = max(lm, s);
    }
    let mn = max(m, reduceMax(tid, lm));
    let corr = exp(m - mn);
    var ls = 0.0;
    for (var i = tid; i < n; i += ${WG}u) { let e = exp(sc[i] - mn); sc[i] = e; ls += e; }
    l = l * corr + reduceSum(tid, ls);
    if (on) {
      var a = acc * corr;
      for (var i = g; i < n; i += groups) { a += sc[i] * f32(vc[base + (p0 + i) * p.D + d]); }
      acc = a;
    }
    m = mn;
    workgroupBarrier();
  }
  part[tid] = select(0.0, acc, on);
  workgroupBarrier();
  if (tid < p.D) {
    var a = 0.0;
    for (var k = 0u; k < groups; k++) { a += part[k * p.D + tid]; }
    ${split ? `let o = (h * p.S + wid.z) * (p.D + 2u);
    out[o + tid] = a;
    if (tid == 0u) { out[o + p.D] = m; out[o + p.D + 1u] = l; }` : 'out[t * p.Hq * p.D + h * p.D + tid] = a / l;'}
  }
}
`;
}

/** The split attention's second half: per head, the S partial (V sum, max, sum) rescaled to one output row. */
export const ATTENTION_COMBINE_WGSL = /* wgsl */ `
struct P { Hq: u32, Hkv: u32, D: u32, qs: u32, scale: f32, S: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let W = p.D + 2u;
  var m = -3.0e38;
  for (var z = 0u; z < p.S; z++) { m = max(m, part[(h * p.S + z) * W + p.D]); }
  var l = 0.0;
  for (var z = 0u; z < p.S; z++) { let b = (h * p.S + z) * W; l += part[b + p.D + 1u] * exp(part[b + p.D] - m); }
  for (var d = tid; d < p.D; d += 64u) {
    var a = 0.0;
    for (var z = 0u; z < p.S; z++) { let b = (h * p.S + z) * W; a += part[b + d] * exp(part[b + p.D] - m); }
    out[h * p.D + d] = a / l;
  }
}
`;
