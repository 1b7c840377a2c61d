// The GEMV shapes the WGSL runtime compiles, chosen by environment so that one GPU call can compare them
// side by side (scripts/gpu/run.sh wgsl-variants):
//   TPRUN_WGSL_GEMV=r2,w128,u2    decode (one token): output rows per workgroup (2|4|8), threads per
//                                 workgroup (64|128|256), K strides loaded per thread before multiplying (1|2|4)
//   TPRUN_WGSL_PREFILL=auto       prefill: a shared-memory tiled GEMM (32 tokens × 64 rows per workgroup; smaller:
//                                 tiled-t16, tiled-n32, tiled-t16-n32),
//                                 or a GEMV tile: tokens per workgroup (4|8|16), rows per workgroup (2|4), e.g. tm8,r2,
//                                 or the GEMM on Dawn's subgroup matrices (tensor cores; kernels/gemm.ts sgmatShader):
//                                 sgmat (activations rounded to f16, as llama.cpp's Vulkan mul_mm does; refused in one
//                                 line where the adapter lacks them), sgmat2 (activations as two f16 parts: f32-accurate,
//                                 twice the matrix work), auto (the default: sgmat-ws where offered, else tiled),
//                                 sgmat-ws[-tT][-nN][-kK][-sS][-zZ][-b2] (both operands staged through workgroup memory, T tokens
//                                 × N rows per workgroup of S subgroups, K k per slice, Z workgroups splitting K for
//                                 the residual-add linears, -b2: two staging buffers, one barrier per slice: defaults
//                                 t32, n64, k64, s4, z1, one buffer); int4 / int8 engines run
//                                 the same kernel, dequantizing as they stage, wherever float16 ones run sgmat-ws
//   TPRUN_WGSL_PREFILL_WS=store=sgmat-ws-t64,q.add=sgmat-ws-z4   auto's staged tile per epilogue (store: qkv, add: o
//                                 and down, swiglu: gate/up; q.: for int4 / int8 weights), replacing AUTO_WS's for those named
//   TPRUN_WGSL_PREFILL_Q=tiled    int4 / int8 prefill on the FMA tiled GEMM (kernels/nbits.ts) whatever TPRUN_WGSL_PREFILL
//                                 says; auto (default): what TPRUN_WGSL_PREFILL gives float16 where it is sgmat-ws
//   TPRUN_WGSL_GEMV_Q=r4,w64,u1   decode GEMV shape for int4 / int8 weights (same parts, and w32): a 16-byte load is 32
//                                 (16) k there, so a K=2048 row is only 64 (128) loads and the float16 shape's
//                                 128 threads x 2 strides leave half the threads idle and half the work done clamped
//   TPRUN_WGSL_Q_UNPACK=exp       int4 / int8 dequantization: exp (nibble/byte ORed into the mantissa of 2^23, the zero
//                                 point taken out of the block's sum once: s·(Σq·x − z·Σx)) or cvt (u32→f32 per element,
//                                 the zero point subtracted per element: the first form)
//   TPRUN_WGSL_SUBGROUPS=0        shared-memory reductions instead of subgroupAdd (gpu.ts)
//   TPRUN_WGSL_PREFILL_ATTN=group prompt attention per KV head group (kernels/attention-group.ts), block: per head
//                                 and block of queries (kernels/attention-prefill.ts), query: the decode kernel per query
// Every variant computes the same sums in the same f32 order per thread; only the split across threads
// differs, so greedy tokens must not change (test/engine-wgsl.test.js checks a non-default one).

import { InputError } from '../../core/errors.js';
import { WS_DEFAULT, type WsTile } from './kernels/gemm.js';
import type { GemvEpilogue } from './kernels/gemv.js';

/** `tiled`: the prefill GEMM (gemmShader) instead of the GEMV with TM tokens; rows / tm are then its tile. */
/** `ws`: the staged subgroup-matrix GEMM, one tile for every linear (tm × rows, KC, S, SK), or auto's tables (per weight format and epilogue). */
export interface GemvShape { rows: number; wg: number; unroll: number; tm: number; tiled?: boolean; sgmat?: SgmatMode; ws?: { KC: number; S: number; SK?: number } | { f16: WsTable; q: WsTable } }

/** `on`/`split`: asked for by name (sgmat / sgmat2), refused where absent; `auto`: falls back to tiled. */
export type SgmatMode = 'on' | 'split' | 'auto';
const SGMAT: Record<string, SgmatMode> = { sgmat: 'on', sgmat2: 'split', auto: 'auto' };

/**
 * Defaults from the H200 run of `run.sh wgsl-variants` (bench/results/issue15-wgsl-h200-variants.jsonl):
 * decode r2,w128,u2 was the fastest of 9 shapes (262.7 tok/s; the spread was 234-263, so GEMV shape is
 * not what limits decode) and the tiled GEMM prefilled 1.57× faster than the best GEMV tile (4,510 vs
 * 2,878 tok/s), every one with transformers' greedy tokens on brown-llama-a.
 */
export const DECODE_DEFAULT: GemvShape = { rows: 2, wg: 128, unroll: 2, tm: 1 };
/**
 * Quantized decode: every thread busy on a K=2048 int4 row (64 units: w64, one stride each) and the 8
 * vec4 of x a q4 unit needs shared by 4 rows (8 with the fused gate/up), where the float16 shape
 * (r2,w128,u2) leaves 64 threads idle and clamps the other 64's second stride (weighted 0). Chosen by that count, not yet measured (run.sh wgsl-int4).
 */
export const DECODE_Q_DEFAULT: GemvShape = { rows: 4, wg: 64, unroll: 1, tm: 1 };
const TILED: GemvShape = { rows: 64, wg: 256, unroll: 1, tm: 32, tiled: true };
/** The tiled FMA GEMM, where subgroup matrices are absent (or cannot hold the staged tile). */
export const PREFILL_TILED: GemvShape = TILED;
/** A staged tile per epilogue, i.e. per LLaMA linear: store = qkv, add = o and down, swiglu = the fused gate/up. */
export type WsTable = Record<GemvEpilogue, WsTile>;
/**
 * `auto`'s staged tiles, for float16 weights and for int4 / int8 ones (whose staging dequantizes: more
 * work per staged weight, so more tokens per tile may pay there). THE place to change after a GPU run:
 * `run.sh sgmat` times every tile per linear and prints the fastest per epilogue as a TPRUN_WGSL_PREFILL_WS
 * value. The add linears (o, down) are the narrow ones, where split-K (SK) can fill the device. Each tile
 * must fit the adapter (Pipelines checks; auto falls back to the tiled GEMM where one does not).
 */
// From the H200 run of bench/results/issue15-wgsl-h200x2-session5-mid.jsonl (run.sh sgmat + sgmat-int4, the
// fastest exact tile per epilogue): the TinyLlama-shape prefill 11,439 tokens/s with this table against 10,138
// (split-K alone) and 9,768 (the default tile everywhere); int4 11,356 against 10,418 and the FMA GEMM's 4,663.
// int4's qkv keeps the default tile: the microbench's pick (k128) was slower in the model
// (issue15-wgsl-h200-session5-int4-store.jsonl: 11,827 and 13,462 tokens/s against 11,111, two rounds).
// int4's gate/up takes float16's tile: 64 rows per workgroup give a 128-token prompt 176 workgroups for the
// H200's 132 SMs where 128 rows gave 88; in the model 1.03x and 1.05x the prefill (run.sh ab, two calls of
// three interleaved rounds, issue15-wgsl-h200-session6-ab.jsonl) though the microbench had them even.
export const AUTO_WS: { f16: WsTable; q: WsTable } = {
  f16: { store: WS_DEFAULT, add: { ...WS_DEFAULT, SK: 2 }, swiglu: { TT: 64, TN: 64, KC: 32, S: 4 } },
  q: { store: WS_DEFAULT, add: { ...WS_DEFAULT, SK: 2 }, swiglu: { TT: 64, TN: 64, KC: 32, S: 4 } },
};
/**
 * `auto`, the default: the staged subgroup-matrix GEMM (sgmat-ws, AUTO_WS's tiles; float16 and int4 / int8 weights) where the adapter offers
 * f16 subgroup matrices, else the tiled one. On the H200 (scripts/gpu/run.sh sgmat, one call) it
 * prefilled the TinyLlama-1.1B shape at 9,713 tokens/s against the tiled GEMM's 5,125, with transformers'
 * greedy tokens on 4 of 4 brown-llama-a prompts; the unstaged sgmat kernel was no faster than tiled (4,861).
 */
const AUTO: GemvShape = { ...TILED, sgmat: 'auto', tm: WS_DEFAULT.TT, rows: WS_DEFAULT.TN, ws: AUTO_WS };

const WS_RE = /^sgmat-ws(?:-t(16|32|64|128))?(?:-n(16|32|64|128))?(?:-k(32|64|128))?(?:-s(4|8))?(?:-z(2|4|8))?(-b2)?$/;
function wsTile(m: RegExpExecArray): WsTile {
  return { TT: Number(m[1] ?? WS_DEFAULT.TT), TN: Number(m[2] ?? WS_DEFAULT.TN), KC: Number(m[3] ?? WS_DEFAULT.KC), S: Number(m[4] ?? WS_DEFAULT.S), SK: Number(m[5] ?? 1), ...(m[6] ? { DB: true } : {}) };
}

/**
 * TPRUN_WGSL_PREFILL_WS=store=sgmat-ws-…,add=…,q.swiglu=…: some of auto's tiles replaced (`q.`: the int4 /
 * int8 table), so that a GPU run tries a per-linear choice before AUTO_WS is edited; the others keep AUTO_WS's.
 */
function autoTiles(value: string | undefined): { f16: WsTable; q: WsTable } {
  if (!value) return AUTO_WS;
  const out = { f16: { ...AUTO_WS.f16 }, q: { ...AUTO_WS.q } };
  for (const part of value.split(',').map((x) => x.trim()).filter(Boolean)) {
    const [key, knob] = part.split('=');
    const [table, ep] = key.startsWith('q.') ? ['q' as const, key.slice(2)] : ['f16' as const, key];
    const m = WS_RE.exec(knob ?? '');
    if (!(ep in AUTO_WS.f16) || !m) throw new InputError(`TPRUN_WGSL_PREFILL_WS=${value}: '${part}' is not [q.]store|add|swiglu=sgmat-ws[-tT][-nN][-kK][-sS][-zZ][-b2]`);
    out[table][ep as GemvEpilogue] = wsTile(m);
  }
  return out;
}
export const PREFILL_DEFAULT: GemvShape = AUTO;

const ALLOWED: Record<string, number[]> = { r: [2, 4, 8], w: [32, 64, 128, 256], u: [1, 2, 4], tm: [4, 8, 16] };

function parse(name: string, value: string | undefined, base: GemvShape, keys: string[]): GemvShape {
  if (!value) return base;
  if (keys.includes('tm') && value === 'tiled') return TILED;
  // A smaller GEMM tile: tiled-t16 (16 tokens), tiled-n32 (32 rows), or both.
  const tile = keys.includes('tm') ? /^tiled(?:-t(16|32))?(?:-n(32|64))?$/.exec(value) : null;
  if (tile) return { ...TILED, tm: Number(tile[1] ?? TILED.tm), rows: Number(tile[2] ?? TILED.rows) };
  // The tile is the adapter's (subgroup-matrix shape); Pipelines fills it in, or falls back to TILED.
  if (keys.includes('tm') && value === 'auto') return AUTO;
  if (keys.includes('tm') && SGMAT[value]) return { ...TILED, sgmat: SGMAT[value] };
  // The subgroup-matrix GEMM staged through workgroup memory (kernels/gemm.ts sgmatWsShader): tokens, rows,
  // k per slice and subgroups per workgroup of its tile; Pipelines checks the tile against the adapter's shape.
  const ws = keys.includes('tm') ? WS_RE.exec(value) : null;
  if (ws) { const { TT, TN, ...rest } = wsTile(ws); return { ...TILED, sgmat: 'on', tm: TT, rows: TN, ws: rest }; }
  if (keys.includes('tm') && /^sgmat2?-n32$/.test(value)) return { ...TILED, rows: 32, sgmat: SGMAT[value.slice(0, -4)] };
  // A GEMV tile named in parts starts from the GEMV prefill shape, not from the tiled default.
  const out = base.tiled ? { rows: 2, wg: 128, unroll: 1, tm: 8 } : { ...base };
  for (const part of value.split(',').map((x) => x.trim()).filter(Boolean)) {
    const m = /^(tm|r|w|u)(\d+)$/.exec(part);
    const ok = m && keys.includes(m[1]) && ALLOWED[m[1]].includes(Number(m[2]));
    if (!m || !ok) throw new InputError(`${name}=${value}: '${part}' is not one of ${keys.map((k) => ALLOWED[k].map((n) => k + n).join('|')).join(', ')}${keys.includes('tm') ? ', or one of tiled|tiled-t16|tiled-n32|tiled-t16-n32|sgmat|sgmat2|sgmat-n32|sgmat2-n32|sgmat-ws[-tT][-nN][-kK][-sS][-zZ][-b2]|auto alone' : ''}`);
    const n = Number(m[2]);
    if (m[1] === 'r') out.rows = n; else if (m[1] === 'w') out.wg = n; else if (m[1] === 'u') out.unroll = n; else out.tm = n;
  }
  return out;
}

export type QUnpack = 'exp' | 'cvt';

/** int4 / int8 prefill: `auto`, the staged subgroup-matrix GEMM wherever float16 runs it; `tiled`, the FMA one (kernels/nbits.ts). */
export type PrefillQ = 'auto' | 'tiled';

export function gemvShapes(env: NodeJS.ProcessEnv = process.env): { decode: GemvShape; decodeQ: GemvShape; prefill: GemvShape; prefillQ: PrefillQ; unpack: QUnpack } {
  const unpack = env.TPRUN_WGSL_Q_UNPACK || 'exp';
  if (unpack !== 'exp' && unpack !== 'cvt') throw new InputError(`TPRUN_WGSL_Q_UNPACK=${unpack}: not one of exp|cvt`);
  const prefillQ = env.TPRUN_WGSL_PREFILL_Q || 'auto';
  if (prefillQ !== 'auto' && prefillQ !== 'tiled') throw new InputError(`TPRUN_WGSL_PREFILL_Q=${prefillQ}: not one of auto|tiled`);
  return {
    prefillQ,
    decode: parse('TPRUN_WGSL_GEMV', env.TPRUN_WGSL_GEMV, DECODE_DEFAULT, ['r', 'w', 'u']),
    decodeQ: parse('TPRUN_WGSL_GEMV_Q', env.TPRUN_WGSL_GEMV_Q, DECODE_Q_DEFAULT, ['r', 'w', 'u']),
    unpack,
    prefill: ((s) => (s.sgmat === 'auto' ? { ...s, ws: autoTiles(env.TPRUN_WGSL_PREFILL_WS) } : s))(parse('TPRUN_WGSL_PREFILL', env.TPRUN_WGSL_PREFILL, PREFILL_DEFAULT, ['tm', 'r'])),
  };
}

/** A weight chunk's rows: every shape has at least 2 rows per workgroup, and a grid dimension holds at most 65535 workgroups. */
export const MAX_CHUNK_ROWS = 65535 * 2;

/**
 * How a prompt's attention runs (TPRUN_WGSL_PREFILL_ATTN, layers.ts OpBuilder.body): per KV head group (default,
 * where a tile fits the head size), per head and block of queries, or the decode kernel once per query.
 */
export type PrefillAttentionKind = 'group' | 'block' | 'query';
export function prefillAttention(env: NodeJS.ProcessEnv = process.env): PrefillAttentionKind {
  const v = env.TPRUN_WGSL_PREFILL_ATTN;
  if (!v || v === 'group') return 'group';
  if (v === 'block' || v === 'query') return v;
  throw new InputError(`TPRUN_WGSL_PREFILL_ATTN=${v}: not one of group|block|query`);
}

/**
 * How a prompt's dispatches reach the GPU (TPRUN_WGSL_SUBMIT=N): a command buffer is submitted after the
 * first N / 4 dispatches, then after every N, so the GPU starts on the first layer while the host still
 * records the rest. As one buffer (TPRUN_WGSL_SUBMIT=0) the GPU waited for all of it: recording 200
 * dispatches through Dawn's Node binding took 0.7-1.1 ms of host time on the 2-core development machine,
 * and a TinyLlama-shape prompt is ~180. 20 is what the H200 A/B ran (its count then took in the decode-only
 * entries of the dispatch list too: 32 entries were ~21 prompt dispatches).
 */
export function prefillSubmitEvery(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.TPRUN_WGSL_SUBMIT;
  if (v === undefined || v === '') return 20;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || (n > 0 && n < 4)) throw new InputError(`TPRUN_WGSL_SUBMIT=${v}: not 0 (one command buffer) or a whole number of dispatches >= 4`);
  return n;
}

// The switch helper lives in util/ (the world and the checksum read their switches with it too).
export { onOff } from '../../util/env.js';
