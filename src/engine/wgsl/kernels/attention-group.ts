// Causal attention of a prompt (T > 1) per KV head group: one workgroup takes RB query rows of ONE kv head,
// where a row is a (position, query head) pair of the heads that share that kv head (GQA), flattened
// position-major, so each K and V tile is staged once for all G = heads / kv_heads heads (8:1 on TinyLlama)
// and for RB / G positions. Flash-attention's loop (Dao et al., 2022; the split of ggml-vulkan's
// flash_attn.comp in ggml-org/llama.cpp): per K/V tile of KT positions, scores S = Q·Kᵀ, the running max
// and sum rescaled (online softmax, exp2 with log2(e) folded into the query scale), then O += P·V.
//
// Why it is faster than attention-prefill.ts (one workgroup per head and 8 queries, 16-key tiles, head size
// a runtime value): the head size is a compile-time constant (the loops unroll, K/Q/V are read as vec4),
// every thread owns a 4-row × (KT/16)-key block of scores and a 4-row × (head/16)-dimension block of the
// output in registers (each workgroup-memory load feeds 4-8 FMAs instead of one), tiles are 2× longer
// (half the barriers), the next K and V tiles are loaded into registers while the current one is used
// (the global load latency is hidden behind the arithmetic), and the kv heads' query heads share tiles.
// The row max is combined through a small workgroup array of per-thread partials (no subgroup size is
// assumed); the row sum stays per thread until the end.
//
// Same bindings and parameter uniform as the decode kernel (attention.ts); output [T, heads·head].

import { STEP_WGSL } from './common.js';

/**
 * Query rows (position, head pairs) per workgroup, key positions per staged tile, and rows per thread (default
 * 4: fewer means more threads for the same rows, a shorter path per thread, fewer FMAs per workgroup-memory load).
 */
export interface GroupTile { RB: number; KT: number; RPT?: number }

/** Threads per row: a row's score columns and output dimensions are split over TX threads. */
const TX = 16;
const rpt = (t: GroupTile) => t.RPT ?? 4;

/** Tiles in order of preference: the first whose workgroup memory fits the device is the default. */
export const GROUP_TILES: readonly GroupTile[] = [{ RB: 32, KT: 32 }, { RB: 32, KT: 16 }, { RB: 16, KT: 16 }];

/** Workgroup memory of a tile at head size D: Q rows and a K/V tile (f32, rows padded by 4), P and the row partials (padded by 1). */
export function groupTileBytes(D: number, t: GroupTile): number {
  return 4 * (t.RB * (D + 4) + t.KT * (D + 4) + t.RB * (t.KT + 1) + t.RB * (TX + 1));
}

/** Why the kernel cannot take head size D with tile t (undefined: it can). */
export function groupTileProblem(D: number, t: GroupTile, maxBytes: number, maxThreads: number): string | undefined {
  if (D % 4 || D < 4) return `head size ${D} is not a multiple of 4`;
  const RPT = rpt(t);
  if (t.RB % RPT || t.RB < RPT) return `${t.RB} rows per workgroup is not a multiple of ${RPT}`;
  if (t.KT % TX || t.KT < TX) return `${t.KT} keys per tile is not a multiple of ${TX}`;
  if ((t.RB / RPT) * TX > maxThreads) return `${(t.RB / RPT) * TX} threads per workgroup, the device allows ${maxThreads}`;
  const b = groupTileBytes(D, t);
  if (b > maxBytes) return `needs ${b} bytes of workgroup memory at head size ${D}, the device allows ${maxBytes}`;
  return undefined;
}

/** The default tile for head size D on a device (undefined: none fits; the caller keeps the older kernels). */
export function pickGroupTile(D: number, maxBytes: number, maxThreads: number): GroupTile | undefined {
  return GROUP_TILES.find((t) => !groupTileProblem(D, t, maxBytes, maxThreads));
}

/** Threads of a workgroup and its grid for T tokens: [kv heads, blocks of RB rows]. */
export function groupThreads(t: GroupTile): number { return (t.RB / rpt(t)) * TX; }
export function groupGrid(t: GroupTile, T: number, Hq: number, Hkv: number): [number, number] {
  return [Hkv, Math.ceil((T * (Hq / Hkv)) / t.RB)];
}

/**
 * `D`: head size (compile-time); `kv16`: the KV cache holds float16 (rope.ts writes it); tiles, scores and
 * sums are float32 either way.
 */
export function attentionGroupShader(D: number, kv16: boolean, t: GroupTile): string {
  const { RB, KT } = t;
  const RPT = rpt(t);
  const T = kv16 ? 'f16' : 'f32';
  const NT = groupThreads(t);
  const D4 = D / 4;
  const S4 = D4 + 1; // Q and K/V rows in vec4, padded by one: the K rows 16 threads read fall in different banks
  const KS = KT + 1; // P row stride: the two row blocks of a 32-wide warp read different banks
  const KC = KT / TX; // keys per thread and tile
  const DV = Math.ceil(D4 / TX); // output vec4s per thread and row
  const NL = Math.ceil((KT * D4) / NT); // vec4s per thread to stage a K or V tile
  const even = (KT * D4) % NT === 0;
  const LOG2E = 1.4426950408889634;
  // Loops over a thread's rows, keys and output vec4s are written out: their values live in registers.
  const U = (n: number, body: (i: number) => string) => Array.from({ length: n }, (_, i) => body(i)).join('\n');
  // Loads tile p0's K or V rows (clamped to the last position in context: past it they are masked) into registers.
  const load = (regs: string, src: string, p0: string) => U(NL, (j) => {
    const i = `tid + ${j * NT}u`;
    const get = `${regs}[${j}] = ${src}[base4 + min(${p0} + (${i}) / ${D4}u, ctx - 1u) * ${D4}u + (${i}) % ${D4}u];`;
    return even || (j + 1) * NT <= KT * D4 ? `  ${get}` : `  if (${i} < ${KT * D4}u) { ${get} }`;
  });
  const store = (regs: string) => U(NL, (j) => {
    const i = `tid + ${j * NT}u`;
    const put = `kv[(${i}) / ${D4}u * ${S4}u + (${i}) % ${D4}u] = vec4<f32>(${regs}[${j}]);`;
    return even || (j + 1) * NT <= KT * D4 ? `    ${put}` : `    if (${i} < ${KT * D4}u) { ${put} }`;
  });
  return /* wgsl */ `${kv16 ? 'enable f16;\n' : ''}${STEP_WGSL}
struct P { Hq: u32, Hkv: u32, D: u32, qs: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<${T}>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<${T}>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
var<workgroup> qw: array<vec4<f32>, ${RB * S4}>;  // [row][d4], scaled by scale·log2(e)
var<workgroup> kv: array<vec4<f32>, ${KT * S4}>;  // the K tile, then the V tile: [key][d4]
var<workgroup> pw: array<f32, ${RB * KS}>;        // [row][key] probabilities of the tile
var<workgroup> red: array<f32, ${RB * (TX + 1)}>; // [row][thread] partial row maxima (at the end: sums); rows padded by one

@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let kvh = wid.x;
  // The blocks with the longest context first: the causal tail's big workgroups start before the small ones.
  let blk = nwg.y - 1u - wid.y;
  let G = p.Hq / p.Hkv;
  let rows = st.T * G;
  let r0 = blk * ${RB}u;
  let tLast = min(st.T - 1u, (r0 + ${RB - 1}u) / G);
  let ctx = st.pos0 + tLast + 1u; // positions the block's last query sees
  let base4 = (st.row * p.Hkv + kvh) * st.cap * ${D4}u;
  let ty = tid / ${TX}u;
  let tx = tid % ${TX}u;
  // Rows past T·G compute on the last token's query and are never written.
  for (var i = tid; i < ${RB * D4}u; i += ${NT}u) {
    let r = min(r0 + i / ${D4}u, rows - 1u);
    let t = r / G;
    let h = kvh * G + r % G;
    qw[(i / ${D4}u) * ${S4}u + i % ${D4}u] = qkv[(t * p.qs + h * ${D}u) / 4u + i % ${D4}u] * (p.scale * ${LOG2E});
  }
${U(RPT, (i) => `  let qpos${i} = st.pos0 + min(r0 + ty * ${RPT}u + ${i}u, rows - 1u) / G;
  var m${i} = -3.0e38;
  var l${i} = 0.0;
${U(DV, (j) => `  var acc${i}_${j} = vec4<f32>();`)}`)}
  var kr: array<vec4<${T}>, ${NL}>;
  var vr: array<vec4<${T}>, ${NL}>;
${load('kr', 'kc', '0u')}
${load('vr', 'vc', '0u')}
  for (var p0 = 0u; p0 < ctx; p0 += ${KT}u) {
    workgroupBarrier(); // the previous tile's V reads are done (and, the first time, qw is written)
${store('kr')}
    workgroupBarrier();
    let p1 = p0 + ${KT}u;
    if (p1 < ctx) {
${load('kr', 'kc', 'p1')}
    }
${U(RPT, (i) => U(KC, (c) => `    var s${i}_${c} = 0.0;`))}
    for (var d4 = 0u; d4 < ${D4}u; d4++) {
${U(KC, (c) => `      let k${c} = kv[(tx + ${c * TX}u) * ${S4}u + d4];`)}
${U(RPT, (i) => `      let q${i} = qw[(ty * ${RPT}u + ${i}u) * ${S4}u + d4];
${U(KC, (c) => `      s${i}_${c} += dot(q${i}, k${c});`)}`)}
    }
${U(RPT, (i) => `${U(KC, (c) => `    s${i}_${c} = select(-3.0e38, s${i}_${c}, p0 + tx + ${c * TX}u <= qpos${i});`)}
    red[(ty * ${RPT}u + ${i}u) * ${TX + 1}u + tx] = ${U(KC, (c) => `s${i}_${c}`).split('\n').reduce((x, y) => `max(${x}, ${y})`)};`)}
    workgroupBarrier(); // the row partials are written and the K tile's reads done: V may replace it
${store('vr')}
    if (p1 < ctx) {
${load('vr', 'vc', 'p1')}
    }
    // The first tile always holds position 0, so m is finite from then on and masked keys weigh exp2(-huge) = 0.
${U(RPT, (i) => `    {
      let row = ty * ${RPT}u + ${i}u;
      var mt = m${i};
      for (var j = 0u; j < ${TX}u; j++) { mt = max(mt, red[row * ${TX + 1}u + j]); }
      let corr = exp2(m${i} - mt);
      m${i} = mt;
${U(KC, (c) => `      let e${c} = exp2(s${i}_${c} - mt);
      pw[row * ${KS}u + tx + ${c * TX}u] = e${c};`)}
      l${i} = l${i} * corr + ${U(KC, (c) => `e${c}`).split('\n').join(' + ')};
${U(DV, (j) => `      acc${i}_${j} *= corr;`)}
    }`)}
    workgroupBarrier(); // P and the V tile are in place
    for (var k = 0u; k < ${KT}u; k++) {
${U(DV, (j) => `      let v${j} = kv[k * ${S4}u + ${(j + 1) * TX <= D4 ? `tx + ${j * TX}u` : `min(tx + ${j * TX}u, ${D4 - 1}u)`}];`)}
${U(RPT, (i) => `      let e${i} = pw[(ty * ${RPT}u + ${i}u) * ${KS}u + k];
${U(DV, (j) => `      acc${i}_${j} += e${i} * v${j};`)}`)}
    }
  }
  // Each thread's row sums cover its own keys only (all share the row's max): add the ${TX} partials of a row.
  workgroupBarrier();
${U(RPT, (i) => `  red[(ty * ${RPT}u + ${i}u) * ${TX + 1}u + tx] = l${i};`)}
  workgroupBarrier();
${U(RPT, (i) => `  {
    let row = ty * ${RPT}u + ${i}u;
    let r = r0 + row;
    if (r < rows) {
      var sum = 0.0;
      for (var j = 0u; j < ${TX}u; j++) { sum += red[row * ${TX + 1}u + j]; }
      let o = ((r / G) * p.Hq + kvh * G + r % G) * ${D4}u;
${U(DV, (j) => (j + 1) * TX <= D4 ? `      out[o + tx + ${j * TX}u] = acc${i}_${j} / sum;` : `      if (tx + ${j * TX}u < ${D4}u) { out[o + tx + ${j * TX}u] = acc${i}_${j} / sum; }`)}
    }
  }`)}
}
`;
}
