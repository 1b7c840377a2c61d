// The small kernels: embedding gather, residual add (tp > 1, after the host all-reduce), and greedy
// argmax on the GPU (so a decode step sends one u32 to the host, not the vocabulary's logits).

import { STEP_WGSL } from './common.js';

/**
 * Rows [r0, r0 + rows) of the float16 table live in this chunk; a token outside them is written as zeros
 * by the first chunk (vocab-parallel embedding: rows of other ranks are zero, then all-reduced) and
 * left to the chunk that holds it otherwise. `ids` holds the call's token ids (global vocabulary ids).
 */
export const EMBED_WGSL = /* wgsl */ `${STEP_WGSL}
struct P { H2: u32, r0: u32, rows: u32, first: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x >= p.H2) { return; }
  let id = ids[g.y];
  let o = g.y * p.H2 + g.x;
  if (id >= p.r0 && id < p.r0 + p.rows) { y[o] = unpack2x16float(table[(id - p.r0) * p.H2 + g.x]); }
  else if (p.first == 1u) { y[o] = vec2<f32>(0.0); }
}
`;

export const ADD_WGSL = /* wgsl */ `${STEP_WGSL}
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 64u;
  if (i < st.T * p.n) { y[i] += a[i]; }
}
`;

/**
 * Greedy choice over one row of logits: the largest value, the lowest index among equals (as the host's
 * argmax). Writes the global id (+ offset: this rank's first vocabulary row) into ids[0] for the next
 * step's embedding, and (id, value bits) into res for the host.
 */
export const ARGMAX_WGSL = /* wgsl */ `
struct P { n: u32, offset: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> res: array<u32>;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) tid: u32) {
  var v = -3.4e38;
  var idx = 0xffffffffu;
  for (var i = tid; i < p.n; i += 256u) {
    let x = logits[i];
    if (x > v || idx == 0xffffffffu) { v = x; idx = i; }
  }
  bv[tid] = v;
  bi[tid] = idx;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) {
      let ov = bv[tid + k];
      let oi = bi[tid + k];
      if (oi != 0xffffffffu && (bi[tid] == 0xffffffffu || ov > bv[tid] || (ov == bv[tid] && oi < bi[tid]))) { bv[tid] = ov; bi[tid] = oi; }
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    ids[0] = bi[0] + p.offset;
    res[0] = bi[0] + p.offset;
    res[1] = bitcast<u32>(bv[0]);
  }
}
`;
