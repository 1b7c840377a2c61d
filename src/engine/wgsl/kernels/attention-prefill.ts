// Causal attention of a whole prompt (T > 1) over the KV cache: one workgroup per (head, block of QB
// queries), flash-attention's tiling (Dao et al., 2022; the same split as ggml-vulkan's flash_attn.comp,
// ggml-org/llama.cpp): the queries of a block share every K and V tile they read, staged once in
// workgroup memory, with the online softmax (running max and sum, rescaled per tile) per query row.
// The decode kernel (attention.ts) run at prefill gives every query its own workgroup, so each one
// re-reads the whole causal prefix of K and V: QB times the traffic of this one.
// Same bindings and parameter uniform as the decode kernel; output [T, heads·head].

import { STEP_WGSL } from './common.js';

/** Queries per workgroup and key positions per staged tile. */
const QB = 8;
const KT = 16;
const WG = QB * KT; // scoring: one thread per (query, key) of a tile
/** Largest head size this kernel holds in workgroup memory (q block and a K/V tile); larger heads use the decode kernel per query. */
export const ATTN_PREFILL_MAX_HEAD = 128;
export const ATTN_PREFILL_QB = QB;
const KS = ATTN_PREFILL_MAX_HEAD + 1; // K/V tile row stride: +1 so the KT rows a warp scores fall in different banks
const DPT = ATTN_PREFILL_MAX_HEAD / KT; // head dimensions per thread in the V sum (KT threads per query row)

/** `kv16`: the KV cache holds float16 (rope.ts writes it); the tiles and all sums stay float32. */
export function attentionPrefillShader(kv16: boolean): string {
  const T = kv16 ? 'f16' : 'f32';
  return /* wgsl */ `${kv16 ? 'enable f16;\n' : ''}${STEP_WGSL}
struct P { Hq: u32, Hkv: u32, D: u32, qs: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<${T}>;
@group(0) @binding(4) var<storage, read> vc: array<${T}>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
var<workgroup> qb: array<f32, ${QB * ATTN_PREFILL_MAX_HEAD}>;  // [query][d], scaled
var<workgroup> kv: array<f32, ${KT * KS}>;                      // the K tile, then the V tile: [key][d]
var<workgroup> sc: array<f32, ${QB * KT}>;                      // [query][key] scores of the tile

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let t0 = wid.y * ${QB}u;
  let D = p.D;
  let kvh = h / (p.Hq / p.Hkv);
  let base = (st.row * p.Hkv + kvh) * st.cap * D;
  // Query rows past T compute on the last token's query and are never written.
  for (var i = tid; i < ${QB}u * D; i += ${WG}u) {
    let t = min(t0 + i / D, st.T - 1u);
    qb[i] = qkv[t * p.qs + h * D + i % D] * p.scale;
  }
  // Scoring: this thread's (query, key) in a tile; the V sum: query qi, dimensions lane + KT·j.
  let qi = tid / ${KT}u;
  let kj = tid % ${KT}u;
  let lane = kj;
  let qpos = st.pos0 + min(t0 + qi, st.T - 1u); // this thread's query position (causal limit)
  let ctx = st.pos0 + min(t0 + ${QB}u, st.T);    // positions the block's last query sees
  var m = -3.0e38;
  var l = 0.0;
  var acc: array<f32, ${DPT}>;
  for (var p0 = 0u; p0 < ctx; p0 += ${KT}u) {
    workgroupBarrier(); // the previous tile's V reads are done (and, first time, qb is written)
    for (var i = tid; i < ${KT}u * D; i += ${WG}u) {
      let pos = min(p0 + i / D, ctx - 1u);
      kv[(i / D) * ${KS}u + i % D] = f32(kc[base + pos * D + i % D]);
    }
    workgroupBarrier();
    var s = 0.0;
    for (var d = 0u; d < D; d++) { s += qb[qi * D + d] * kv[kj * ${KS}u + d]; }
    sc[qi * ${KT}u + kj] = select(-3.0e38, s, p0 + kj <= qpos);
    workgroupBarrier();
    for (var i = tid; i < ${KT}u * D; i += ${WG}u) {
      let pos = min(p0 + i / D, ctx - 1u);
      kv[(i / D) * ${KS}u + i % D] = f32(vc[base + pos * D + i % D]);
    }
    workgroupBarrier();
    // Every thread of a query row keeps the same running max and sum (no reduction needed): the first
    // tile always holds position 0, so m is finite from then on and masked keys weigh exp(-huge) = 0.
    var mt = m;
    for (var k = 0u; k < ${KT}u; k++) { mt = max(mt, sc[qi * ${KT}u + k]); }
    let corr = exp(m - mt);
    l *= corr;
    for (var j = 0u; j < ${DPT}u; j++) { acc[j] *= corr; }
    for (var k = 0u; k < ${KT}u; k++) {
      let e = exp(sc[qi * ${KT}u + k] - mt);
      l += e;
      for (var j = 0u; j < ${DPT}u; j++) {
        let d = lane + j * ${KT}u;
        if (d < D) { acc[j] += e * kv[k * ${KS}u + d]; }
      }
    }
    m = mt;
  }
  let t = t0 + qi;
  if (t < st.T) {
    for (var j = 0u; j < ${DPT}u; j++) {
      let d = lane + j * ${KT}u;
      if (d < D) { out[t * p.Hq * D + h * D + d] = acc[j] / l; }
    }
  }
}
`;
}
