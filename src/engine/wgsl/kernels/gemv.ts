// Float16 or MatMulNBits (int4 / int8 block-quantized) matrix × float32 activations, the decoder's every
// linear: y[t, n] = Σ_k x[t, k] · W[n, k].
//
// Weights are stored [N, K] (the transpose of the engine's [K, N] MatMul initializer, done once on the
// GPU at load: transposeShader) so that one workgroup streams whole contiguous rows, 16 bytes (8 halves)
// per thread per load, with f32 accumulation. Each workgroup owns ROWS output rows and TM tokens: at
// decode (TM 1) that is llama.cpp's mul_mat_vec layout (ggml-vulkan's mul_mat_vec.comp: a few rows
// per workgroup, threads striding along K, a subgroup/shared-memory reduction); at prefill (TM 8) each
// loaded weight is reused for 8 tokens. Epilogues: store, add into y (the residual stream), or SwiGLU
// over a fused gate/up weight (rows [0, n) = mlp.fc = HF gate_proj, rows [n, 2n) = mlp.gate = up_proj).
// Quantized rows are MatMulNBits' own (upload-nbits.ts), streamed the same way: a 16-byte load is 32
// nibbles or 16 bytes, dequantized in registers with the block's scale and zero point.

import { STEP_WGSL } from './common.js';

export type GemvEpilogue = 'store' | 'add' | 'swiglu';
/**
 * Weight storage: float16 rows, or onnxruntime MatMulNBits blocks (4 or 8 bits, per-block scales, zero
 * points 8 / 128 unless the engine gives its own), see kernels/nbits.ts.
 */
export type WeightFormat = 'f16' | 'q4' | 'q8';
/**
 * What the kernel does to x on load: nothing; `scale`, x ⊙ g (g per gate/up pair: an AWQ prequant factor);
 * `rms`, RMSNorm fused in: y = rsqrt(mean(x²) + eps) · Σ_k W[n, k] · x[k] · g[k] with g = the norm weight (⊙
 * the prequant factor), the sum of squares accumulated in the same pass over x that the dot products make.
 */
export type GemvPrologue = 'none' | 'scale' | 'rms';

/**
 * `unroll`: K strides each thread loads before it multiplies (that many 16-byte loads per row in flight).
 * `unpack` (q4 / q8): 'cvt' converts each nibble / byte to f32 and subtracts the zero point from it; 'exp'
 * (default) ORs it into the mantissa of 2^23 (0x4B000000 | q is the float 2^23 + q exactly: one bit op and
 * one subtraction instead of an int→float conversion, as llama.cpp's Vulkan dequant_q4_0 path and
 * onnxruntime's MatMulNBits kernels do) and takes the zero point out of the block's sum once per unit,
 * s·(Σ q·x − z·Σ x), with Σ x shared by every row of the workgroup; block indices shift by log2(bs)
 * (MatMulNBits' block size is a power of two, checked at upload) rather than divide.
 */
export interface GemvVariant { rows: number; tm: number; epilogue: GemvEpilogue; subgroups: boolean; wg: number; unroll?: number; fmt?: WeightFormat; prologue?: GemvPrologue; unpack?: 'exp' | 'cvt' }

/** K elements per 16-byte weight load (one `unit`: a vec4<u32>). */
export const UNIT_K: Record<WeightFormat, number> = { f16: 8, q4: 32, q8: 16 };

/**
 * The uniform every GEMV / GEMM variant reads (one layout for all, so one bind group serves decode and
 * prefill): KU units per weight row, n rows in this chunk, n0 their first column in y, ys y's row stride,
 * xs x's row stride / 4, K, quantization block size bs and blocks per row nb, eps (rms), the default zero
 * point zp and whether the zb buffer holds per-block ones.
 */
export const GEMV_PARAMS_WGSL = 'struct P { KU: u32, n: u32, n0: u32, ys: u32, xs: u32, K: u32, bs: u32, nb: u32, eps: f32, zp: f32, hasZp: u32 }';

/** Bind group slots of a variant: P, Step, W, x, y, then scales and zero points (quantized), then g (prologue). */
export function gemvSlots(fmt: WeightFormat, prologue: GemvPrologue): ('u' | 'r' | 'w')[] {
  return ['u', 'u', 'r', 'r', 'w', ...(fmt === 'f16' ? [] : ['r', 'r'] as const), ...(prologue === 'none' ? [] : ['r'] as const)];
}

/** The bindings after y, in slot order (shared with the quantized GEMM). */
export function extraBindings(fmt: WeightFormat, prologue: GemvPrologue, gType = 'array<vec4<f32>>'): string {
  let b = 5;
  const out: string[] = [];
  if (fmt !== 'f16') {
    out.push(`@group(0) @binding(${b++}) var<storage, read> sc: array<f32>;`, `@group(0) @binding(${b++}) var<storage, read> zb: array<f32>;`);
  }
  if (prologue !== 'none') out.push(`@group(0) @binding(${b++}) var<storage, read> g: ${gType};`);
  return out.join('\n');
}

// One unit's dot product with x (XU vec4s of x): float16 pairs, or nibbles / bytes less the zero point,
// times the block scale. A q4 unit (32 k) spans two blocks when the block size is 16: words 0-1 take
// s01 / z01, words 2-3 s23 / z23. ORT's MatMulNBits nibble order: byte b holds k = 2b (low) and 2b + 1 (high).
function unitDot(fmt: WeightFormat, exp: boolean): string {
  if (fmt !== 'f16' && exp) return unitDotExp(fmt);
  if (fmt === 'f16') return /* wgsl */ `
fn udot(wv: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, s01: f32, s23: f32, z01: f32, z23: f32) -> f32 {
  return dot(vec4<f32>(unpack2x16float(wv.x), unpack2x16float(wv.y)), x0) + dot(vec4<f32>(unpack2x16float(wv.z), unpack2x16float(wv.w)), x1);
}`;
  if (fmt === 'q8') return /* wgsl */ `
fn b4(w: u32, z: f32) -> vec4<f32> { return vec4<f32>(vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u) & vec4<u32>(255u)) - z; }
fn udot(wv: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, s01: f32, s23: f32, z01: f32, z23: f32) -> f32 {
  return s01 * (dot(b4(wv.x, z01), x0) + dot(b4(wv.y, z01), x1) + dot(b4(wv.z, z01), x2) + dot(b4(wv.w, z01), x3));
}`;
  return /* wgsl */ `
fn n8(w: u32, z: f32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
  let lo = vec4<f32>(vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u) & vec4<u32>(15u)) - z;
  let hi = vec4<f32>(vec4<u32>(w >> 4u, w >> 12u, w >> 20u, w >> 28u) & vec4<u32>(15u)) - z;
  return dot(lo, vec4<f32>(xa.x, xa.z, xb.x, xb.z)) + dot(hi, vec4<f32>(xa.y, xa.w, xb.y, xb.w));
}
fn udot(wv: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, s01: f32, s23: f32, z01: f32, z23: f32) -> f32 {
  return s01 * (n8(wv.x, z01, x0, x1) + n8(wv.y, z01, x2, x3)) + s23 * (n8(wv.z, z23, x4, x5) + n8(wv.w, z23, x6, x7));
}`;
}

// The 'exp' forms: q as the float 2^23 + q, less 2^23 (exact); the zero point applied per half unit to Σ x
// (xs.x: words 0-1, xs.y: words 2-3). Nibble k of a word is bits 4k..4k+3 (ORT's order: k = 2b low, 2b + 1
// high), so a word's 8 nibbles line up with two x vec4s without a swizzle.
function unitDotExp(fmt: 'q4' | 'q8'): string {
  const M = /* wgsl */ `
fn mag(q: vec4<u32>) -> vec4<f32> { return bitcast<vec4<f32>>(q | vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0); }`;
  if (fmt === 'q8') return M + /* wgsl */ `
fn b4(w: u32) -> vec4<f32> { return mag((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)); }
fn udot(wv: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, xs: vec2<f32>, s01: f32, s23: f32, z01: f32, z23: f32) -> f32 {
  return s01 * (dot(b4(wv.x), x0) + dot(b4(wv.y), x1) + dot(b4(wv.z), x2) + dot(b4(wv.w), x3) - z01 * (xs.x + xs.y));
}`;
  return M + /* wgsl */ `
fn n8(w: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
  let lo = mag((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
  let hi = mag((vec4<u32>(w) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
  return dot(lo, xa) + dot(hi, xb);
}
fn udot(wv: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, xs: vec2<f32>, s01: f32, s23: f32, z01: f32, z23: f32) -> f32 {
  return s01 * (n8(wv.x, x0, x1) + n8(wv.y, x2, x3) - z01 * xs.x) + s23 * (n8(wv.z, x4, x5) + n8(wv.w, x6, x7) - z23 * xs.y);
}`;
}

export function gemvShader(v: GemvVariant): string {
  const { rows: R, tm: TM, wg: WG } = v;
  const U = v.unroll ?? 1;
  const fmt = v.fmt ?? 'f16';
  const pro = v.prologue ?? 'none';
  const quant = fmt !== 'f16';
  const exp = quant && (v.unpack ?? 'exp') === 'exp';
  const XU = UNIT_K[fmt] / 4; // x vec4s per unit
  const pairs = v.epilogue === 'swiglu' ? 2 : 1;
  const A0 = R * TM * pairs; // dot-product accumulators per thread
  const A = A0 + (pro === 'rms' ? TM : 0); // + the sums of squares per token
  // One slot per subgroup and accumulator (WebGPU subgroups have at least 4 lanes), else one per thread.
  const redSize = v.subgroups ? Math.max(WG / 4, 1) * A : WG * A;
  // With subgroups: tid / subgroup_size is taken as the subgroup's index, i.e. subgroups are runs of
  // consecutive local indices, as every Vulkan driver forms them for a 1-D workgroup (verified on
  // lavapipe; TPRUN_WGSL_SUBGROUPS=0 selects the shared-memory tree, which assumes nothing).
  const reduce = v.subgroups ? /* wgsl */ `
  for (var i = 0u; i < ${A}u; i++) { acc[i] = subgroupAdd(acc[i]); }
  let nsg = max(${WG}u / sgsize, 1u); // a subgroup wider than the workgroup holds all of it
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
  const rs = pro === 'rms' ? ` * inverseSqrt(red[${A0}u + i % ${TM}u] / f32(p.K) + p.eps)` : '';
  const out = v.epilogue === 'swiglu'
    ? `let a = red[i * 2u]${rs}; let b = red[i * 2u + 1u]${rs}; y[yi] = a / (1.0 + exp(-a)) * b;`
    : v.epilogue === 'add' ? `y[yi] += red[i]${rs};` : `y[yi] = red[i]${rs};`;
  const xs = Array.from({ length: XU }, (_, e) => e);
  // x of token j, unit element e, with the prologue's g of pair q.
  const xarg = (e: number) => pro === 'none' ? `xv[j * ${XU}u + ${e}u]` : `xv[j * ${XU}u + ${e}u] * gv[${e}]`;
  return /* wgsl */ `${v.subgroups ? 'enable subgroups;' : ''}
${STEP_WGSL}
${GEMV_PARAMS_WGSL}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${extraBindings(fmt, pro)}
var<workgroup> red: array<f32, ${redSize}>;
${unitDot(fmt, exp)}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32${v.subgroups ? ', @builtin(subgroup_size) sgsize: u32, @builtin(subgroup_invocation_id) sglane: u32' : ''}) {
  // Token tiles along x: the workgroups sharing a row block run back to back, so at prefill the
  // weight rows they all read come from L2 after the first.
  let o0 = wid.y * ${R}u;
  let t0 = wid.x * ${TM}u;
  var acc: array<f32, ${A}>;${exp ? `
  let lbs = countTrailingZeros(p.bs);` : ''}
  // U strides per iteration: all of their weight loads are issued before the first multiply, so a
  // thread keeps U·ROWS 16-byte loads in flight (past the end of K a stride is clamped and weighted 0).
  for (var k0 = tid; k0 < p.KU; k0 += ${WG * U}u) {
    var wv: array<vec4<u32>, ${U * R * pairs}>;
    ${quant ? `var sv: array<vec4<f32>, ${U * R * pairs}>; // s01, s23, z01, z23` : ''}
    var ok: array<f32, ${U}>;
    for (var u = 0u; u < ${U}u; u++) {
      let k = min(k0 + u * ${WG}u, p.KU - 1u);
      ok[u] = select(0.0, 1.0, k0 + u * ${WG}u < p.KU);
      for (var r = 0u; r < ${R}u; r++) {
        let o = min(o0 + r, p.n - 1u);
        for (var q = 0u; q < ${pairs}u; q++) {
          let row = o + q * p.n;
          wv[(u * ${R}u + r) * ${pairs}u + q] = w[row * p.KU + k];${quant ? `
          ${exp ? `let b01 = row * p.nb + ((k * ${UNIT_K[fmt]}u) >> lbs);
          let b23 = row * p.nb + min((k * ${UNIT_K[fmt]}u + ${UNIT_K[fmt] / 2}u) >> lbs, p.nb - 1u);` : `let b01 = row * p.nb + (k * ${UNIT_K[fmt]}u) / p.bs;
          let b23 = row * p.nb + min((k * ${UNIT_K[fmt]}u + ${UNIT_K[fmt] / 2}u) / p.bs, p.nb - 1u);`}
          var z = vec2<f32>(p.zp);
          if (p.hasZp != 0u) { z = vec2<f32>(zb[b01], zb[b23]); }
          sv[(u * ${R}u + r) * ${pairs}u + q] = vec4<f32>(sc[b01], sc[b23], z);` : ''}
        }
      }
    }
    for (var u = 0u; u < ${U}u; u++) {
      let k = min(k0 + u * ${WG}u, p.KU - 1u);
      var xv: array<vec4<f32>, ${XU * TM}>;
      for (var j = 0u; j < ${TM}u; j++) {
        let t = min(t0 + j, st.T - 1u);
        for (var e = 0u; e < ${XU}u; e++) {
          // Past K (a q4 row whose K is an odd multiple of 16 ends half way through its last unit): zeros.
          let kx = ${XU}u * k + e;
          xv[j * ${XU}u + e] = select(vec4<f32>(0.0), x[t * p.xs + kx] * ok[u], kx * 4u < p.K);
        }${pro === 'rms' ? `
        for (var e = 0u; e < ${XU}u; e++) { acc[${A0}u + j] += dot(xv[j * ${XU}u + e], xv[j * ${XU}u + e]); }` : ''}
      }
      for (var q = 0u; q < ${pairs}u; q++) {${pro === 'none' ? '' : `
        var gv: array<vec4<f32>, ${XU}>;
        for (var e = 0u; e < ${XU}u; e++) { gv[e] = g[q * (p.K / 4u) + min(${XU}u * k + e, p.K / 4u - 1u)]; }`}${exp ? `
        // Σ x per half unit (the zero point's share), once for all rows.
        var xsm: array<vec2<f32>, ${TM}>;
        for (var j = 0u; j < ${TM}u; j++) {
          xsm[j] = vec2<f32>(dot(${xs.slice(0, XU / 2).map(xarg).join(' + ')}, vec4<f32>(1.0)), dot(${xs.slice(XU / 2).map(xarg).join(' + ')}, vec4<f32>(1.0)));
        }` : ''}
        for (var r = 0u; r < ${R}u; r++) {
          let wq = wv[(u * ${R}u + r) * ${pairs}u + q];
          let sq = ${quant ? `sv[(u * ${R}u + r) * ${pairs}u + q]` : 'vec4<f32>(1.0, 1.0, 0.0, 0.0)'};
          for (var j = 0u; j < ${TM}u; j++) {
            acc[(r * ${TM}u + j) * ${pairs}u + q] += udot(wq, ${xs.map(xarg).join(', ')},${exp ? ' xsm[j],' : ''} sq.x, sq.y, sq.z, sq.w);
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
