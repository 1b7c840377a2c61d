// Rotary embedding of q and k (HF's rotate_half, non-interleaved: GroupQueryAttention's
// rotary_interleaved 0), then k and v written into the KV cache at the token's position. cos/sin are the
// engine's own rotary.cos_cache / sin_cache ([max_seq, head/2]), so scaling and theta are what the
// engine was built with. q is rotated in place in the qkv buffer ([T, (heads + 2·kv_heads)·head]).
// The cache holds float32, or float16 (`kv16`, WebGPU's shader-f16: half the bytes; rounded once here,
// attention reads it back into float32).

import { STEP_WGSL } from './common.js';

export function ropeShader(kv16: boolean): string {
  const T = kv16 ? 'f16' : 'f32';
  return /* wgsl */ `${kv16 ? 'enable f16;' : ''}
${STEP_WGSL}
struct P { Hq: u32, Hkv: u32, D: u32, qs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> cosc: array<f32>;
@group(0) @binding(4) var<storage, read> sinc: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<${T}>;
@group(0) @binding(6) var<storage, read_write> vc: array<${T}>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let t = g.y;
  let half = p.D / 2u;
  let nrot = (p.Hq + p.Hkv) * half;
  let pos = st.pos0 + t;
  let row = t * p.qs;
  if (g.x < nrot) {
    let head = g.x / half;
    let i = g.x % half;
    let b = row + head * p.D;
    let x1 = qkv[b + i];
    let x2 = qkv[b + i + half];
    let c = cosc[pos * half + i];
    let s = sinc[pos * half + i];
    let r1 = x1 * c - x2 * s;
    let r2 = x2 * c + x1 * s;
    if (head < p.Hq) {
      qkv[b + i] = r1;
      qkv[b + i + half] = r2;
    } else {
      let o = ((st.row * p.Hkv + head - p.Hq) * st.cap + pos) * p.D;
      kc[o + i] = ${T}(r1);
      kc[o + i + half] = ${T}(r2);
    }
  } else if (g.x < nrot + p.Hkv * p.D) {
    let j = g.x - nrot;
    let kh = j / p.D;
    let d = j % p.D;
    vc[((st.row * p.Hkv + kh) * st.cap + pos) * p.D + d] = ${T}(qkv[row + (p.Hq + p.Hkv) * p.D + j]);
  }
}
`;
}
