// The prefill GEMM: y[t, n] = Σ_k x[t, k] · W[n, k] for a whole prompt at once, with the same bindings
// and epilogues as the GEMV (gemv.ts), which it replaces when T > 1.

import { STEP_WGSL } from './common.js';
import { extraBindings, GEMV_PARAMS_WGSL, UNIT_K, type GemvEpilogue, type GemvPrologue, type WeightFormat } from './gemv.js';

/**
 * Prefill GEMM (TPRUN_WGSL_PREFILL=tiled): a TT-token × TN-row output tile per 256-thread workgroup (32 × 64
 * by default), the x and W slices of 32 along K staged in workgroup memory (W unpacked to f32 once per
 * tile), TT/16 tokens × TN/16 rows per thread, f32 accumulation; the classic shared-memory tiling of
 * ggml-vulkan's mul_mm.comp (ggml-org/llama.cpp), here without its cooperative-matrix paths. Same bindings
 * and epilogues as the GEMV. Smaller tiles (tiled-t16, tiled-n32) give a 128-token prompt 2-4× more
 * workgroups (32 × 64 on a 2048-row linear is 128 workgroups: about one per SM of an H200) for less reuse of
 * each staged value. Every tile sums each output over k in the same order, so all give the same numbers.
 */
export const TILE_T = 32;
export const TILE_N = 64;
export function gemmShader(epilogue: GemvEpilogue, TT = TILE_T, TN = TILE_N): string {
  if (![16, 32].includes(TT) || ![32, 64].includes(TN)) throw new Error(`gemm: no ${TT}x${TN} tile`);
  const pairs = epilogue === 'swiglu' ? 2 : 1;
  const TPT = TT / 16; // tokens per thread (16 × 16 threads)
  const RPT = TN / 16; // rows per thread
  const A = TPT * RPT; // accumulators per matrix
  const out = epilogue === 'swiglu'
    ? `let a = acc[(i * ${RPT}u + r) * 2u]; let b = acc[(i * ${RPT}u + r) * 2u + 1u]; y[yi] = a / (1.0 + exp(-a)) * b;`
    : epilogue === 'add' ? `y[yi] += acc[i * ${RPT}u + r];` : `y[yi] = acc[i * ${RPT}u + r];`;
  return /* wgsl */ `
${STEP_WGSL}
struct P { K8: u32, n: u32, n0: u32, ys: u32, xs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
var<workgroup> xt: array<vec4<f32>, ${TT * 8}>;          // [token][k / 4], 32 k per slice
var<workgroup> wt: array<f32, ${pairs * TN * 33}>;       // [q][row][k], rows padded to 33 against bank conflicts

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t0 = wid.x * ${TT}u;
  let o0 = wid.y * ${TN}u;
  let tx = tid % 16u; // rows tx * RPT .. + RPT
  let ty = tid / 16u; // tokens ty * TPT .. + TPT
  var acc: array<f32, ${A * pairs}>;
  let K4 = p.K8 * 2u;
  for (var k8 = 0u; k8 < p.K8; k8 += 4u) {
    // x: TT tokens × 8 vec4.
    if (tid < ${TT * 8}u) {
      let t = min(t0 + tid / 8u, st.T - 1u);
      let k4 = k8 * 2u + tid % 8u;
      xt[tid] = select(vec4<f32>(0.0), x[t * p.xs + min(k4, K4 - 1u)], k4 < K4);
    }
    // W: TN rows × 4 vec4<u32> (8 halves each) per matrix.
    if (tid < ${TN * 4}u) {
      for (var q = 0u; q < ${pairs}u; q++) {
        let row = tid / 4u;
        let kq = k8 + tid % 4u;
        let o = min(o0 + row, p.n - 1u) + q * p.n;
        let wv = select(vec4<u32>(0u), w[o * p.K8 + min(kq, p.K8 - 1u)], kq < p.K8);
        let b = (q * ${TN}u + row) * 33u + (tid % 4u) * 8u;
        let a0 = unpack2x16float(wv.x); let a1 = unpack2x16float(wv.y); let a2 = unpack2x16float(wv.z); let a3 = unpack2x16float(wv.w);
        wt[b] = a0.x; wt[b + 1u] = a0.y; wt[b + 2u] = a1.x; wt[b + 3u] = a1.y;
        wt[b + 4u] = a2.x; wt[b + 5u] = a2.y; wt[b + 6u] = a3.x; wt[b + 7u] = a3.y;
      }
    }
    workgroupBarrier();
    for (var k4 = 0u; k4 < 8u; k4++) {
      var xa: array<vec4<f32>, ${TPT}>;
      for (var i = 0u; i < ${TPT}u; i++) { xa[i] = xt[(ty * ${TPT}u + i) * 8u + k4]; }
      for (var r = 0u; r < ${RPT}u; r++) {
        for (var q = 0u; q < ${pairs}u; q++) {
          let b = (q * ${TN}u + tx * ${RPT}u + r) * 33u + k4 * 4u;
          let wv = vec4<f32>(wt[b], wt[b + 1u], wt[b + 2u], wt[b + 3u]);
          for (var i = 0u; i < ${TPT}u; i++) { acc[(i * ${RPT}u + r) * ${pairs}u + q] += dot(xa[i], wv); }
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ${TPT}u; i++) {
    let t = t0 + ty * ${TPT}u + i;
    for (var r = 0u; r < ${RPT}u; r++) {
      let o = o0 + tx * ${RPT}u + r;
      if (t < st.T && o < p.n) {
        let yi = t * p.ys + p.n0 + o;
        ${out}
      }
    }
  }
}
`;
}

/** A subgroup-matrix shape the adapter offers with f16 operands and f32 results (Dawn's adapter.info.subgroupMatrixConfigs). */
export interface SgmatConfig { M: number; N: number; K: number; /** The adapter's (fixed) subgroup size. */ sg: number }

/**
 * The workgroup tile of sgmatShader: TT tokens × TN output rows, 2 × 2 subgroups of (TT/2) × (TN/2). TN 64
 * by default; 32 (TPRUN_WGSL_PREFILL=sgmat-n32) gives a 128-token prompt twice the workgroups (4 × 32 on a
 * 2048-row linear is 128, about one 4-subgroup workgroup per H200 SM, few to hide load latency).
 */
export function sgmatTile(c: SgmatConfig, TN = 64): { TT: number; TN: number } {
  if (TN % (2 * c.N)) throw new Error(`sgmat: ${TN} rows per tile is not a multiple of 2 × ${c.N}`);
  return { TT: 2 * c.M, TN };
}

/**
 * Prefill GEMM on Dawn's experimental subgroup matrices (WGSL `chromium_experimental_subgroup_matrix`,
 * lowered to Vulkan's cooperative matrices, i.e. the H200's tensor cores; TPRUN_WGSL_PREFILL=sgmat|auto).
 * What ggml-vulkan's mul_mm.comp does with VK_KHR_cooperative_matrix (ggml-org/llama.cpp): activations
 * are rounded to f16 when staged (`split` keeps the rounding error as a second f16 matrix and multiplies
 * it too, so the product is f32-accurate to ~2^-22 for twice the matrix work), weights are read as f16
 * straight from storage, sums are f32.
 *
 * Offsets of subgroup-matrix loads and stores must be subgroup-uniform to WGSL's uniformity analysis:
 * they derive from @builtin(subgroup_id) (which is), not from local_invocation_index / subgroup_size
 * (Tint refuses that: "'subgroupMatrixStore' requires argument 1 to be uniform").
 * Spelling: Dawn of npm webgpu 0.6.2 (what the H200 runs) takes the majorness as a template argument
 * (`subgroupMatrixLoad<T, row_major>(p, offset, stride)`; the older `(p, offset, col_major: bool, stride)`
 * form is deprecated there) and the types as <T, columns, rows>; the proposal's <T, rows, columns> order of
 * later Chromium differs only for non-square configs, and 16x16x16 is the one chosen where offered.
 * Per workgroup, 4 subgroups in a 2 × 2 grid, each owning (TT/2) tokens × (TN/2) rows as
 * RT × CT result tiles of M × N. Operands (WGSL's column-major matrix naming: left<f16, K, M> is M rows ×
 * K columns, right<f16, N, K> is K rows × N columns, result<f32, N, M> is M × N):
 *   left  = x tile [tokens, k] in workgroup memory, row-major (col_major = false, stride KC);
 *   right = W^T slice [k, rows]: W is stored [N, K], so element (k, n) sits at n·K + k, i.e. column-major
 *           with stride K (col_major = true), loaded from storage;
 *   result [tokens, rows] → workgroup memory (row-major, stride TN) → the epilogue, which bounds-checks
 *           tokens against T and rows against n (edge tiles compute garbage that is never written).
 * Rows past n in an edge tile and k past K read finite weights (the next rows, or the 16 zero rows
 * upload.ts puts after every chunk, so no matrix load leaves the buffer) against zero activations; they
 * never reach y.
 */
export function sgmatShader(epilogue: GemvEpilogue, c: SgmatConfig, split = false, tileRows = 64): string {
  const pairs = epilogue === 'swiglu' ? 2 : 1;
  const { TT, TN } = sgmatTile(c, tileRows);
  const ST = TT / 2, SN = TN / 2;
  const RT = ST / c.M, CT = SN / c.N;
  const KC = Math.max(32, c.K); // k per staged x slice
  const WG = 4 * c.sg;
  const PER = (TT * TN) / WG; // outputs per thread in the epilogue
  if (!Number.isInteger(RT) || !Number.isInteger(CT) || !Number.isInteger(PER) || KC % c.K) throw new Error(`sgmat: no tile for ${c.M}x${c.N}x${c.K}, subgroup ${c.sg}`);
  const L = `subgroup_matrix_left<f16, ${c.K}, ${c.M}>`;
  const R = `subgroup_matrix_right<f16, ${c.N}, ${c.K}>`;
  const acc: string[] = [], mma: string[] = [];
  for (let i = 0; i < RT; i++) {
    mma.push(`let a${i} = subgroupMatrixLoad<${L}, row_major>(&xh, (ts + ${i * c.M}u) * ${KC}u + kk, ${KC}u);`);
    if (split) mma.push(`let l${i} = subgroupMatrixLoad<${L}, row_major>(&xl, (ts + ${i * c.M}u) * ${KC}u + kk, ${KC}u);`);
  }
  for (let q = 0; q < pairs; q++) {
    for (let j = 0; j < CT; j++) {
      // A tile wholly past the chunk's rows reads row 0 instead (finite, never written out).
      mma.push(`let b${j}_${q} = subgroupMatrixLoad<${R}, col_major>(&w, (select(0u, o0 + tn + ${j * c.N}u, o0 + tn + ${j * c.N}u < p.n) + ${q}u * p.n) * K + k + kk, K);`);
      for (let i = 0; i < RT; i++) {
        acc.push(`var c${i}_${j}_${q} = subgroup_matrix_result<f32, ${c.N}, ${c.M}>();`);
        mma.push(`c${i}_${j}_${q} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}_${q}, c${i}_${j}_${q});`);
        if (split) mma.push(`c${i}_${j}_${q} = subgroupMatrixMultiplyAccumulate(l${i}, b${j}_${q}, c${i}_${j}_${q});`);
      }
    }
  }
  const store = (q: number) => {
    const s: string[] = [];
    for (let i = 0; i < RT; i++) for (let j = 0; j < CT; j++) s.push(`subgroupMatrixStore<row_major>(&ot, (ts + ${i * c.M}u) * ${TN}u + tn + ${j * c.N}u, c${i}_${j}_${q}, ${TN}u);`);
    return s.join('\n  ');
  };
  const write = epilogue === 'swiglu'
    ? 'let a = gate[e]; let b = ot[i]; y[yi] = a / (1.0 + exp(-a)) * b;'
    : epilogue === 'add' ? 'y[yi] += ot[i];' : 'y[yi] = ot[i];';
  return /* wgsl */ `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
${STEP_WGSL}
struct P { K8: u32, n: u32, n0: u32, ys: u32, xs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<f16>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
var<workgroup> xh: array<f16, ${TT * KC}>;   // [token][k] of this k slice, rounded to f16
${split ? `var<workgroup> xl: array<f16, ${TT * KC}>;   // x - xh, the rounding error, in f16` : ''}
var<workgroup> ot: array<f32, ${TT * TN}>;   // the workgroup's results [token][row], for the epilogue

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_id) sid: u32) {
  let t0 = wid.x * ${TT}u;
  let o0 = wid.y * ${TN}u;
  let ts = (sid / 2u) * ${ST}u; // this subgroup's first token in the tile
  let tn = (sid % 2u) * ${SN}u; // and first row
  let K = p.K8 * 8u;
  let K4 = p.K8 * 2u;
  ${acc.join('\n  ')}
  for (var k = 0u; k < K; k += ${KC}u) {
    for (var i = li; i < ${(TT * KC) / 4}u; i += ${WG}u) {
      let t = min(t0 + i / ${KC / 4}u, st.T - 1u);
      let k4 = k / 4u + i % ${KC / 4}u;
      // Clamped to f16's range: an activation past it would be inf and poison every sum it enters.
      let v = clamp(select(vec4<f32>(0.0), x[t * p.xs + min(k4, K4 - 1u)], k4 < K4), vec4<f32>(-65504.0), vec4<f32>(65504.0));
      let h = vec4<f16>(v);
      xh[4u * i] = h.x; xh[4u * i + 1u] = h.y; xh[4u * i + 2u] = h.z; xh[4u * i + 3u] = h.w;
      ${split ? 'let r = vec4<f16>(v - vec4<f32>(h));\n      xl[4u * i] = r.x; xl[4u * i + 1u] = r.y; xl[4u * i + 2u] = r.z; xl[4u * i + 3u] = r.w;' : ''}
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${KC}u; kk += ${c.K}u) {
      ${mma.join('\n      ')}
    }
    workgroupBarrier();
  }
${pairs === 2 ? `  // SwiGLU needs gate and up of the same output: gate goes through 'ot' first and waits in registers.
  var gate: array<f32, ${PER}>;
  ${store(0)}
  workgroupBarrier();
  for (var e = 0u; e < ${PER}u; e++) { gate[e] = ot[li + e * ${WG}u]; }
  workgroupBarrier();
  ${store(1)}` : `  ${store(0)}`}
  workgroupBarrier();
  for (var e = 0u; e < ${PER}u; e++) {
    let i = li + e * ${WG}u;
    let t = t0 + i / ${TN}u;
    let o = o0 + i % ${TN}u;
    if (t < st.T && o < p.n) {
      let yi = t * p.ys + p.n0 + o;
      ${write}
    }
  }
}
`;
}

/**
 * sgmatWsShader's workgroup tile: TT tokens × TN rows, KC k per staged slice, S subgroups; SK > 1 splits
 * K over that many workgroups per output tile (split-K; the `add` epilogue only, see sgmatWsShader).
 */
export interface WsTile { TT: number; TN: number; KC: number; S: number; SK?: number; /** two staging buffers, one barrier per slice */ DB?: boolean }
export const WS_DEFAULT: WsTile = { TT: 32, TN: 64, KC: 64, S: 4 };

/** Split-K only where partial sums may meet in y: the `add` epilogue (a residual add); store and SwiGLU run whole. */
export function wsSplit(t: WsTile, epilogue: GemvEpilogue): number {
  return epilogue === 'add' ? t.SK ?? 1 : 1;
}

/**
 * How S subgroups split a TT × TN tile: a GT × GN grid of subgroup blocks, each RT × CT result tiles of
 * M × N, the squarest block (most reuse of each loaded fragment) that the tile divides into; or why none.
 * `fmt`: a quantized slice is whole 16-byte units of its rows (32 k for int4, 16 for int8).
 */
export function wsLayout(t: WsTile, c: Pick<SgmatConfig, 'M' | 'N' | 'K'>, fmt: WeightFormat = 'f16'): { GT: number; GN: number; RT: number; CT: number } | string {
  let best: { GT: number; GN: number; RT: number; CT: number } | undefined;
  for (let GT = 1; GT <= t.S; GT++) {
    const GN = t.S / GT;
    if (!Number.isInteger(GN) || t.TT % (GT * c.M) || t.TN % (GN * c.N)) continue;
    const l = { GT, GN, RT: t.TT / GT / c.M, CT: t.TN / GN / c.N };
    const side = (x: typeof l) => Math.min(x.RT * c.M, x.CT * c.N);
    if (!best || side(l) > side(best)) best = l;
  }
  const unit = Math.max(8, UNIT_K[fmt]);
  if (t.KC % c.K || t.KC % unit) return `${t.KC} k per slice is not a multiple of ${c.K} and ${unit}${fmt === 'f16' ? '' : ` (a ${fmt} weight unit)`}`;
  const SK = t.SK ?? 1;
  if (t.TN % SK) return `${t.TN} rows do not split into ${SK} K splits' grid rows`;
  return best ?? `a ${t.TT}x${t.TN} tile does not split into ${t.S} subgroup blocks of ${c.M}x${c.N} tiles`;
}

/**
 * The prefill dispatch's tile (layers.ts sizes the grid as ceil(T / tm) × ceil(n / rows)): a split-K
 * kernel reports TN / SK rows, so the grid holds about SK workgroups per output tile (sgmatWsShader says
 * how it reads the grid).
 */
export function wsDispatchTile(t: WsTile, epilogue: GemvEpilogue): { tm: number; rows: number } {
  return { tm: t.TT, rows: t.TN / wsSplit(t, epilogue) };
}

/** Workgroup memory sgmatWsShader declares (bytes): Pipelines refuses a tile over the device's limit in one line. */
export function wsBytes(t: WsTile, c: Pick<SgmatConfig, 'M' | 'N'>, pairs: number): number {
  return 2 * (t.TT + pairs * t.TN) * (t.KC + 8) * (t.DB ? 2 : 1) + 4 * t.S * c.M * c.N;
}

/**
 * How sgmatWsShader reads one weight format: the bindings and uniform it needs, the k per 16-byte unit
 * (U), the registers a unit waits in between its load and its stash, and the WGSL that loads unit `e` of
 * the slice (`i`: its index in the slice, `row`: its row of the tile, `o`: that row in the weight chunk,
 * `u`: the unit along the row) and that writes it as f16 to `ws` at `b` (`kb`: its first k, `q`: gate or
 * up). float16 rows are copied; MatMulNBits units (upload-nbits.ts: each row's K contiguous, low nibble
 * first, per-block scale and zero point as f32) are dequantized on the way, (q − z) · s (· g, the AWQ
 * prequant factor of that part, folded into the weight as nbitsGemmShader does) in f32 and rounded to f16
 * once: what ggml-vulkan's mul_mm.comp does with Q4_0 blocks on its cooperative-matrix path
 * (ggml-org/llama.cpp, load_a_to_shmem), with MatMulNBits' layout.
 */
function wsWeights(fmt: WeightFormat, prologue: GemvPrologue, pairs: number, unpack: 'exp' | 'cvt') {
  if (fmt === 'f16') {
    if (prologue !== 'none') throw new Error(`sgmat-ws: no float16 GEMM with a ${prologue} prologue`);
    return {
      U: 8, params: 'struct P { K8: u32, n: u32, n0: u32, ys: u32, xs: u32 }', bindings: '', K: 'p.K8 * 8u', KU: 'p.K8', regs: () => '',
      load: () => '',
      stash: (e: number) => `let h0 = bitcast<vec2<f16>>(rw[${e}].x); let h1 = bitcast<vec2<f16>>(rw[${e}].y); let h2 = bitcast<vec2<f16>>(rw[${e}].z); let h3 = bitcast<vec2<f16>>(rw[${e}].w);
        ws[b] = h0.x; ws[b + 1u] = h0.y; ws[b + 2u] = h1.x; ws[b + 3u] = h1.y; ws[b + 4u] = h2.x; ws[b + 5u] = h2.y; ws[b + 6u] = h3.x; ws[b + 7u] = h3.y;`,
    };
  }
  if (prologue === 'rms') throw new Error('the prefill GEMM reads normed activations (RMSNorm is fused into the decode GEMV only)');
  const bits = fmt === 'q4' ? 4 : 8;
  const U = UNIT_K[fmt], KPW = 32 / bits;
  // Block scales: a q4 unit (32 k) spans two blocks when bs is 16 (words 0-1 and 2-3); a q8 unit (16 k) one.
  const halves = fmt === 'q4' ? 2 : 1;
  const sz = Array.from({ length: halves }, (_, h) => `let b${h} = o * p.nb + min((kb + ${(h * U) / 2}u) / p.bs, p.nb - 1u); let s${h} = sc[b${h}];
        var z${h} = p.zp; if (p.hasZp != 0u) { z${h} = zb[b${h}]; }`).join('\n        ');
  const words = ['x', 'y', 'z', 'w'];
  const deq: string[] = [];
  const gload = (n: number) => { if (prologue === 'scale') deq.push(`let gv${n} = g[min(gq + ${n}u, gl)];`); };
  if (unpack === 'exp') {
    // Two values per op in f16: a nibble / byte ORed into the mantissa of 1024.0h is 1024 + q exactly (the
    // trick of the decode GEMV's 'exp', in f16 as ggml-vulkan's dequant does), less 1024 + z (exact: both in
    // [1024, 2048), whose f16 step is 1), times the scale: one rounding, the same f16 as the f32 form's when
    // the scale is a float16 (what tprun's engines store) and z an integer. Shift `sh` of a word takes
    // value sh into the low half and value sh + KPW / 2 into the high half.
    const mask = bits === 4 ? '0x000F000Fu' : '0x00FF00FFu';
    for (let j = 0; j < 4; j++) {
      const h = Math.floor((j * halves) / 4);
      if (KPW === 8) gload(2 * j), gload(2 * j + 1); else gload(j);
      for (let sh = 0; sh < KPW / 2; sh++) {
        const lo = j * KPW + sh, hi = lo + KPW / 2;
        const g = prologue !== 'scale' ? '' : ` * vec2<f16>(vec2<f32>(gv${Math.floor(lo / 4)}[${lo % 4}], gv${Math.floor(hi / 4)}[${hi % 4}]))`;
        deq.push(`{ let d = (bitcast<vec2<f16>>(((rw[e].${words[j]} >> ${sh * bits}u) & ${mask}) | 0x64006400u) - vec2<f16>(rs[e][${2 * h + 1}])) * vec2<f16>(rs[e][${2 * h}])${g}; ws[b + ${lo}u] = d.x; ws[b + ${hi}u] = d.y; }`);
      }
    }
  } else {
    // 'cvt': each value converted to f32, (q − z) · s (· g) in f32, rounded to f16 once.
    for (let j = 0; j < 4; j++) {
      const h = Math.floor((j * halves) / 4);
      for (let v = 0; v < KPW; v++) {
        const off = j * KPW + v;
        if (off % 4 === 0) gload(off / 4);
        const g = prologue === 'scale' ? ` * gv${Math.floor(off / 4)}[${off % 4}]` : '';
        deq.push(`ws[b + ${off}u] = f16((f32(extractBits(rw[e].${words[j]}, ${v * bits}u, ${bits}u)) - f32(rs[e][${2 * h + 1}]) + 1024.0) * f32(rs[e][${2 * h}])${g});`);
      }
    }
  }
  return {
    U, params: GEMV_PARAMS_WGSL, bindings: extraBindings(fmt, prologue, 'array<vec4<f32>>'), K: 'p.K', KU: 'p.KU',
    regs: (NW: number) => `var rs: array<vec4<f16>, ${NW}>; // each unit's block scales and 1024 + zero points, a pair per block it spans`,
    // The scale and zero point are fetched with the unit, so that their latency hides behind the slice's multiplies too.
    load: (e: number) => `let kb = u * ${U}u;
        ${sz}
        rs[${e}] = vec4<f16>(vec4<f32>(s0, 1024.0 + z0, ${halves === 2 ? 's1, 1024.0 + z1' : 's0, 1024.0 + z0'}));`,
    stash: (e: number) => {
      const body = deq.join('\n        ').replaceAll('rs[e]', `rs[${e}]`).replaceAll('rw[e]', `rw[${e}]`);
      // k past K (the last block's padding, whole units past the row) dequantizes to finite values that meet zero x.
      return `${prologue === 'scale' ? `let gq = (q * K + kb) / 4u; let gl = ${pairs}u * K / 4u - 1u;\n        ` : ''}${body}`;
    },
  };
}

/**
 * The subgroup-matrix prefill GEMM with both operands staged through workgroup memory
 * (TPRUN_WGSL_PREFILL=sgmat-ws[-tTT][-nTN][-kKC][-sS][-zSK][-b2], and `auto`), for float16 weights and (`fmt`)
 * MatMulNBits int4 / int8 ones, dequantized to f16 as they are staged. Why, against sgmatShader: that one
 * loads each W fragment straight from storage, one 16 × 16 load per multiply, and every such load waits
 * the whole memory latency (4 subgroups per workgroup, about one workgroup per SM at 128 tokens: nothing
 * else to run meanwhile) and pays Dawn's bounds clamps (no cooperativeMatrixRobustBufferAccess on NVIDIA).
 * Here:
 *   - each K slice of x (f32, rounded to f16 as llama.cpp's Vulkan mul_mm does) and W (16-byte loads along
 *     a row: a warp reads whole 128-byte lines) is loaded by all threads into registers one slice ahead
 *     (the loads of slice s+1 are in flight while slice s multiplies: register double buffering,
 *     mul_mm.comp's and CUTLASS's classic form), then written to workgroup memory as f16;
 *   - the fragments are loaded from workgroup memory (no clamps), rows padded by 8 halves against bank
 *     conflicts, 16-byte aligned;
 *   - each subgroup owns an RT × CT block of result tiles (wsLayout), so a loaded fragment feeds RT or CT
 *     multiplies;
 *   - the results leave through a per-subgroup M × N scratch one tile at a time (small workgroup memory).
 * DB (knob -b2): two staging buffers, slice s stashed into buffer s % 2, so one barrier per slice instead
 * of two and a subgroup done multiplying may stage the next slice while others still multiply (twice the
 * workgroup memory).
 * Split-K (SK > 1, `add` only): the narrow linears (o, down: 2048 rows at TN 64 and 128 tokens are 128
 * workgroups of 4 subgroups for 132 SMs) get SK workgroups per output tile, each summing a contiguous run
 * of K slices and adding its partial into y with a compare-and-swap loop (WGSL has no float atomics).
 * The grid says how many splits run: layers.ts sizes it from wsDispatchTile's TN / SK rows, which rounds
 * up, so the kernel takes floor(grid rows / row tiles) splits and retires the workgroups past them. The
 * order the partials reach y varies from run to run: exact on small integers, within f32 rounding else.
 * Edge tiles: tokens past T and rows past n read clamped (finite) values, k past K is zero in x and finite
 * in W; the epilogue writes only t < T, o < n. Same bindings and epilogues as the GEMV.
 */
export function sgmatWsShader(epilogue: GemvEpilogue, c: SgmatConfig, t: WsTile = WS_DEFAULT, fmt: WeightFormat = 'f16', prologue: GemvPrologue = 'none', unpack: 'exp' | 'cvt' = 'exp'): string {
  const pairs = epilogue === 'swiglu' ? 2 : 1;
  const lay = wsLayout(t, c, fmt);
  if (typeof lay === 'string') throw new Error(`sgmat-ws: ${lay}`);
  const { TT, TN, KC, S } = t;
  const SK = wsSplit(t, epilogue);
  const { GN, RT, CT } = lay;
  const WG = S * c.sg;
  if (WG > 256) throw new Error(`sgmat-ws: ${S} subgroups of ${c.sg} is over 256 invocations`);
  const wf = wsWeights(fmt, prologue, pairs, unpack);
  const XS = KC + 8; // padded row stride (halves) of both staged tiles
  // Two staging buffers (DB): slice s stashes into buffer s % 2 while slow subgroups still multiply s − 1.
  const NB = t.DB ? 2 : 1, XO = t.DB ? 'xo + ' : '', WO = t.DB ? 'wo + ' : '';
  const X4 = KC / 4, WU = KC / wf.U; // vec4<f32> per x row, 16-byte weight units per W row, per slice
  const NX = Math.ceil((TT * X4) / WG), NW = Math.ceil((pairs * TN * WU) / WG);
  const gx = (TT * X4) % WG !== 0, gw = (pairs * TN * WU) % WG !== 0; // the last load needs a guard
  const MN = c.M * c.N;
  const PER = MN / c.sg;
  if (!Number.isInteger(PER)) throw new Error(`sgmat-ws: a ${c.M}x${c.N} tile does not split over ${c.sg} lanes`);
  const L = `subgroup_matrix_left<f16, ${c.K}, ${c.M}>`;
  const R = `subgroup_matrix_right<f16, ${c.N}, ${c.K}>`;
  const load: string[] = [], stash: string[] = [], acc: string[] = [], mma: string[] = [];
  for (let e = 0; e < NX; e++) {
    const g = gx ? `if (li + ${e * WG}u < ${TT * X4}u) ` : '';
    load.push(`${g}{ let i = li + ${e * WG}u; let k4 = k / 4u + i % ${X4}u;
        rx[${e}] = select(vec4<f32>(0.0), x[min(t0 + i / ${X4}u, st.T - 1u) * p.xs + min(k4, K4 - 1u)], k4 < K4); }`);
    // Clamped to f16's range: an activation past it would be inf and poison every sum it enters.
    stash.push(`${g}{ let i = li + ${e * WG}u; let h = vec4<f16>(clamp(rx[${e}], vec4<f32>(-65504.0), vec4<f32>(65504.0)));
        let b = ${XO}(i / ${X4}u) * ${XS}u + (i % ${X4}u) * 4u; xs[b] = h.x; xs[b + 1u] = h.y; xs[b + 2u] = h.z; xs[b + 3u] = h.w; }`);
  }
  for (let e = 0; e < NW; e++) {
    const g = gw ? `if (li + ${e * WG}u < ${pairs * TN * WU}u) ` : '';
    load.push(`${g}{ let i = li + ${e * WG}u; let row = i / ${WU}u; let u = k / ${wf.U}u + i % ${WU}u;
        let o = min(o0 + row % ${TN}u, p.n - 1u) + (row / ${TN}u) * p.n;
        rw[${e}] = select(vec4<u32>(0u), w[o * KU + min(u, KU - 1u)], u < KU);
        ${wf.load(e)} }`);
    stash.push(`${g}{ let i = li + ${e * WG}u; let b = ${WO}(i / ${WU}u) * ${XS}u + (i % ${WU}u) * ${wf.U}u;
        ${fmt === 'f16' ? '' : `let q = i / ${WU * TN}u; let kb = k + (i % ${WU}u) * ${wf.U}u;
        `}${wf.stash(e)} }`);
  }
  for (let i = 0; i < RT; i++) mma.push(`let a${i} = subgroupMatrixLoad<${L}, row_major>(&xs, ${XO}(ts + ${i * c.M}u) * ${XS}u + kk, ${XS}u);`);
  for (let q = 0; q < pairs; q++) {
    for (let j = 0; j < CT; j++) {
      // W^T: element (k, n) of the slice sits at n·XS + k, i.e. column-major with stride XS.
      mma.push(`let b${j}_${q} = subgroupMatrixLoad<${R}, col_major>(&ws, ${WO}(${q * TN}u + tn + ${j * c.N}u) * ${XS}u + kk, ${XS}u);`);
      for (let i = 0; i < RT; i++) {
        acc.push(`var c${i}_${j}_${q} = subgroup_matrix_result<f32, ${c.N}, ${c.M}>();`);
        mma.push(`c${i}_${j}_${q} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}_${q}, c${i}_${j}_${q});`);
      }
    }
  }
  const out: string[] = [];
  const elem = (i: number, j: number) => `let t = t0 + ts + ${i * c.M}u + ix / ${c.N}u; let o = o0 + tn + ${j * c.N}u + ix % ${c.N}u;`;
  // A split's partial joins y by compare-and-swap on its bits (y is array<atomic<u32>> there).
  const write = pairs === 2 ? 'let a = gate[e]; y[yi] = a / (1.0 + exp(-a)) * v;'
    : epilogue === 'add' && SK > 1 ? `var old = atomicLoad(&y[yi]);
      loop { let r = atomicCompareExchangeWeak(&y[yi], old, bitcast<u32>(bitcast<f32>(old) + v)); if (r.exchanged) { break; } old = r.old_value; }`
      : epilogue === 'add' ? 'y[yi] += v;' : 'y[yi] = v;';
  for (let i = 0; i < RT; i++) {
    for (let j = 0; j < CT; j++) {
      if (pairs === 2) {
        // SwiGLU needs gate and up of one output: gate passes through the scratch first and waits in registers.
        out.push(`subgroupMatrixStore<row_major>(&ot, sid * ${MN}u, c${i}_${j}_0, ${c.N}u);
  workgroupBarrier();
  for (var e = 0u; e < ${PER}u; e++) { gate[e] = ot[sid * ${MN}u + lane + e * ${c.sg}u]; }
  workgroupBarrier();`);
      }
      out.push(`subgroupMatrixStore<row_major>(&ot, sid * ${MN}u, c${i}_${j}_${pairs - 1}, ${c.N}u);
  workgroupBarrier();
  for (var e = 0u; e < ${PER}u; e++) {
    let ix = lane + e * ${c.sg}u; ${elem(i, j)}
    if (t < st.T && o < p.n) { let yi = t * p.ys + p.n0 + o; let v = ot[sid * ${MN}u + ix]; ${write} }
  }
  workgroupBarrier();`);
    }
  }
  // Split-K: which output tile and which run of K slices this workgroup sums (see above); else all of K.
  const split = SK > 1 ? `let ny = (p.n + ${TN - 1}u) / ${TN}u;
  let sk = nwg.y / ny;
  let per = ((K + ${KC - 1}u) / ${KC}u + sk - 1u) / sk * ${KC}u; // k per split, whole slices
  let kBeg = (wid.y / ny) * per;
  if (wid.y >= ny * sk || kBeg >= K) { return; }
  let kEnd = min(K, kBeg + per);
  let o0 = (wid.y % ny) * ${TN}u;` : `let kBeg = 0u;
  let kEnd = K;
  let o0 = wid.y * ${TN}u;`;
  return /* wgsl */ `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
${STEP_WGSL}
${wf.params}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<${SK > 1 ? 'atomic<u32>' : 'f32'}>;
${wf.bindings}
var<workgroup> xs: array<f16, ${TT * XS * NB}>;           // [buffer][token][k] of this k slice, f16
var<workgroup> ws: array<f16, ${pairs * TN * XS * NB}>;   // [buffer][q][row][k] of this k slice
var<workgroup> ot: array<f32, ${S * MN}>;            // one result tile per subgroup, for the epilogue

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, ${SK > 1 ? '@builtin(num_workgroups) nwg: vec3<u32>, ' : ''}@builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let t0 = wid.x * ${TT}u;
  let K = ${wf.K};
  let KU = ${wf.KU};
  let K4 = K / 4u;
  ${split}
  let ts = (sid / ${GN}u) * ${RT * c.M}u; // this subgroup's first token in the tile
  let tn = (sid % ${GN}u) * ${CT * c.N}u; // and first row
  var rx: array<vec4<f32>, ${NX}>;
  var rw: array<vec4<u32>, ${NW}>;
  ${wf.regs(NW)}
  ${acc.join('\n  ')}
  var k = kBeg;
  ${load.join('\n  ')}
  for (; k < kEnd; k += ${KC}u) {
    ${t.DB ? `let par = ((k - kBeg) / ${KC}u) & 1u; let xo = par * ${TT * XS}u; let wo = par * ${pairs * TN * XS}u;\n    ` : ''}${stash.join('\n    ')}
    workgroupBarrier();
    if (k + ${KC}u < kEnd) {
      let k = k + ${KC}u;
      ${load.join('\n      ')}
    }
    for (var kk = 0u; kk < ${KC}u; kk += ${c.K}u) {
      ${mma.join('\n      ')}
    }
    ${t.DB ? '// The next slice stashes into the other buffer: every subgroup is past this barrier only after its multiplies of the slice before.' : 'workgroupBarrier();'}
  }
${pairs === 2 ? `  var gate: array<f32, ${PER}>;\n` : ''}  ${out.join('\n  ')}
}
`;
}
