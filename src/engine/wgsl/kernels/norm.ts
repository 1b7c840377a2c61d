// RMSNorm (LLaMA's; onnxruntime's SimplifiedLayerNormalization with stash_type 1: float32 inside):
// out = x · rsqrt(mean(x²) + eps) · w, one workgroup per token. The `gather` variant normalises only
// the rows listed in `sel` (ln_f before lm_head: only the positions that get logits).

import { STEP_WGSL } from './common.js';

export function rmsNormShader(gather: boolean): string {
  return /* wgsl */ `${STEP_WGSL}
struct P { H: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${gather ? '@group(0) @binding(5) var<storage, read> sel: array<u32>;' : ''}
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let src = ${gather ? 'sel[wid.x]' : 'wid.x'} * p.H;
  let dst = wid.x * p.H;
  var s = 0.0;
  for (var i = tid; i < p.H; i += 256u) { let v = x[src + i]; s += v * v; }
  red[tid] = s;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (tid < k) { red[tid] += red[tid + k]; }
    workgroupBarrier();
  }
  let r = inverseSqrt(red[0] / f32(p.H) + p.eps);
  for (var i = tid; i < p.H; i += 256u) { y[dst + i] = x[src + i] * r * w[i]; }
}
`;
}
