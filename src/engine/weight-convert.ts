// Checkpoint tensors → engine weights without float32 round trips: a 16-bit source element maps to its
// engine bits through a 65536-entry table (128/256 KiB, and the few exponents real weights use stay in
// L1), float32 sources through integer rounding; linears are transposed in cache-sized tiles. The tables
// are made by running the reference float path (toFloat32 → transpose2d → fromFloat32) over every bit
// pattern, so the engine's bytes are those of that path by construction, NaN payloads included.
//
// Conversion is deferred: a DeferredTensor only knows its shape and byte length while the graph is built,
// and produces rows of its engine bytes when the weight file is written, straight into the chunk that
// goes to its final offset (see weight-file.ts).

import type { DType, Tensor } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { numel, toFloat32 } from '../core/dtype.js';
import { f32BitsToF16Bits } from '../core/half.js';
import { fromFloat32, transpose2d } from './dtype.js';
import { HalfSimd, type SourceRanges, halfSimdModuleBytes } from './half-simd.js';
import { type SeedParts, readSeedFile } from './simd-seed-file.js';
import { type LazyOrigin, isLazy } from './lazy-shard.js';
import { onOff } from '../util/env.js';

export type EngineFloat = 'float32' | 'float16';

/** An initializer whose bytes are made when the weight file is written. */
export interface DeferredTensor {
  dtype: DType;
  shape: number[];
  byteLength: number;
  /** Writes rows [r0, r1) of dim 0 (a 0-D or 1-D tensor: elements) into dest from offset 0. */
  fill(dest: Uint8Array, r0: number, r1: number): void;
  /** How another thread can make the same bytes: set for weights of a lazy shard with an origin. */
  job?: WeightJob;
  /** Equal for deferred weights that make the same bytes (sameBytesKey); the weight file stores them once. */
  same?: string;
}

/** A deferred weight as plain data: the shard's tensor `weight`, converted as engineWeight(Transposed) does. */
export interface WeightJob {
  origin: LazyOrigin;
  weight: string;
  transposed: boolean;
  dtype: EngineFloat;
  /** Whether rows can be made apart (a plain 16-bit → float16 map reads only the rows it converts). */
  splittable: boolean;
}

function jobOf(t: Tensor, dtype: EngineFloat, transposed: boolean): WeightJob | undefined {
  if (!isLazy(t) || !t.origin || t.name === undefined) return undefined;
  return { origin: t.origin, weight: t.name, transposed, dtype, splittable: !transposed && dtype === 'float16' && t.dtype !== 'float32' };
}

export function isDeferred(t: Tensor | DeferredTensor): t is DeferredTensor {
  return typeof (t as DeferredTensor).fill === 'function';
}

/** Rows of dim 0 (one per element for 0-D/1-D tensors, whose "rows" are then single values). */
export function deferredRows(t: DeferredTensor): number {
  return t.shape.length <= 1 ? Math.max(1, numel(t.shape)) : t.shape[0];
}

/** All bytes of a deferred tensor at once (small initializers stored inside the graph). */
export function materialize(t: DeferredTensor): Tensor {
  const data = new Uint8Array(t.byteLength);
  if (t.byteLength) t.fill(data, 0, deferredRows(t));
  return { dtype: t.dtype, shape: t.shape, data };
}

// ---- tables -------------------------------------------------------------------------------------------

const tables = new Map<string, Uint16Array | Uint32Array>();

/** engine bits of every 16-bit source pattern, computed by the reference float path. */
function table(src: 'bfloat16' | 'float16', dst: EngineFloat, transposed: boolean): Uint16Array | Uint32Array {
  const key = `${src}>${dst}${transposed ? 'T' : ''}`;
  let t = tables.get(key);
  if (!t) {
    const all = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) all[i] = i;
    let f = toFloat32({ dtype: src, shape: [65536], data: new Uint8Array(all.buffer) });
    // A [65536, 1] → [1, 65536] transpose moves every value through the same float path as a linear's.
    if (transposed) f = transpose2d(f, 65536, 1);
    const out = fromFloat32(f, [65536], dst).data;
    t = dst === 'float16' ? new Uint16Array(out.buffer, out.byteOffset, 65536).slice() : new Uint32Array(out.buffer, out.byteOffset, 65536).slice();
    tables.set(key, t);
  }
  return t;
}

/** float32 bits → float16 bits as the reference path rounds them (finite overflow becomes infinity). */
function f32ToHalfBits(x: number): number {
  const h = f32BitsToF16Bits(x);
  return h < 0 ? ((x >>> 16) & 0x8000) | 0x7c00 : h;
}

// ---- kernels (monomorphic: one per source/destination element width) -----------------------------------

function map16to16(src: Uint16Array, s0: number, n: number, dst: Uint16Array, tab: Uint16Array): void {
  for (let i = 0; i < n; i++) dst[i] = tab[src[s0 + i]];
}

function map16to32(src: Uint16Array, s0: number, n: number, dst: Uint32Array, tab: Uint32Array): void {
  for (let i = 0; i < n; i++) dst[i] = tab[src[s0 + i]];
}

function map32to16(src: Uint32Array, s0: number, n: number, dst: Uint16Array): void {
  for (let i = 0; i < n; i++) dst[i] = f32ToHalfBits(src[s0 + i]);
}

// Transposes: source [rows, cols] (row-major), destination rows k0..k1 of [cols, rows].
// Tiles of TILE source rows keep the source lines being read and the destination lines written in cache.
const TILE = 64;

function trans16to16(src: Uint16Array, rows: number, cols: number, k0: number, k1: number, dst: Uint16Array, tab: Uint16Array): void {
  for (let n0 = 0; n0 < rows; n0 += TILE) {
    const n1 = Math.min(rows, n0 + TILE);
    for (let k = k0; k < k1; k++) {
      let o = (k - k0) * rows + n0;
      let s = n0 * cols + k;
      for (let n = n0; n < n1; n++, o++, s += cols) dst[o] = tab[src[s]];
    }
  }
}

function trans16to32(src: Uint16Array, rows: number, cols: number, k0: number, k1: number, dst: Uint32Array, tab: Uint32Array): void {
  for (let n0 = 0; n0 < rows; n0 += TILE) {
    const n1 = Math.min(rows, n0 + TILE);
    for (let k = k0; k < k1; k++) {
      let o = (k - k0) * rows + n0;
      let s = n0 * cols + k;
      for (let n = n0; n < n1; n++, o++, s += cols) dst[o] = tab[src[s]];
    }
  }
}

function trans32to32(src: Uint32Array, rows: number, cols: number, k0: number, k1: number, dst: Uint32Array): void {
  for (let n0 = 0; n0 < rows; n0 += TILE) {
    const n1 = Math.min(rows, n0 + TILE);
    for (let k = k0; k < k1; k++) {
      let o = (k - k0) * rows + n0;
      let s = n0 * cols + k;
      for (let n = n0; n < n1; n++, o++, s += cols) dst[o] = src[s];
    }
  }
}

function trans32to16(src: Uint32Array, rows: number, cols: number, k0: number, k1: number, dst: Uint16Array): void {
  for (let n0 = 0; n0 < rows; n0 += TILE) {
    const n1 = Math.min(rows, n0 + TILE);
    for (let k = k0; k < k1; k++) {
      let o = (k - k0) * rows + n0;
      let s = n0 * cols + k;
      for (let n = n0; n < n1; n++, o++, s += cols) dst[o] = f32ToHalfBits(src[s]);
    }
  }
}

let simdState: HalfSimd | null | undefined;
let simdWanted = onOff('TPRUN_SIMD');

/** Turns the SIMD path on or off (tests compare both against the reference path). */
export function useSimd(on: boolean): void {
  simdWanted = on;
}

/**
 * The SIMD converter's tables and module bytes as this process makes them; undefined where the transposed
 * tables differ from the plain ones (then there is no SIMD path). scripts/simd-seed.mjs keeps them in
 * dist/ (simd-seed-file.ts), which simd() reads instead of making them.
 */
export function makeSeedParts(): SeedParts | undefined {
  const bf = table('bfloat16', 'float16', false) as Uint16Array;
  const f = table('float16', 'float16', false) as Uint16Array;
  // The SIMD path has one table per source type: it stands for transposed weights too only if the
  // transpose's float copy leaves every pattern as the plain path does (it does on V8; checked anyway).
  const same = (a: Uint16Array, b: Uint16Array) => a.every((x, i) => x === b[i]);
  const ok = same(bf, table('bfloat16', 'float16', true) as Uint16Array) && same(f, table('float16', 'float16', true) as Uint16Array);
  return ok ? { bf16: bf, f16: f, wasm: halfSimdModuleBytes() } : undefined;
}

/** The wasm SIMD converter, when this runtime has wasm SIMD and TPRUN_SIMD is not 0. */
function simd(): HalfSimd | undefined {
  if (simdState === undefined) {
    // The seed the build kept (made there by makeSeedParts, same V8, same modules), else made now.
    const kept = readSeedFile();
    if (kept) {
      for (const [src, t] of [['bfloat16', kept.bf16], ['float16', kept.f16]] as const) {
        tables.set(`${src}>float16`, t);
        tables.set(`${src}>float16T`, t);
      }
    }
    const parts = kept ?? makeSeedParts();
    let module: WebAssembly.Module | undefined;
    try {
      module = parts && new WebAssembly.Module(parts.wasm);
    } catch {
      module = undefined; // no wasm SIMD here: HalfSimd.create says so too
    }
    simdState = (parts && module && HalfSimd.create(parts.bf16, parts.f16, module)) || null;
    if (simdState) seedStats.origin = kept ? 'kept' : 'made';
  }
  return simdWanted ? simdState ?? undefined : undefined;
}

/**
 * What a worker thread needs to convert as this thread does without making it again: the compiled SIMD
 * module and its two tables (a thread makes them in ≈ 0.1 CPU-s: the tables through the reference
 * float path, the module encoded and compiled; a build's weight workers each did).
 */
export interface SimdSeed { module: WebAssembly.Module; bf16: Uint16Array; f16: Uint16Array }

/** This thread's SIMD converter as a seed for worker threads (made now if it was not); undefined without one. */
export function simdSeed(): SimdSeed | undefined {
  const s = simd();
  if (!s) return undefined;
  return { module: s.module, bf16: table('bfloat16', 'float16', false) as Uint16Array, f16: table('float16', 'float16', false) as Uint16Array };
}

/**
 * Seeded converters made in this thread (tests check a build's workers took the seed), and where this
 * thread's own converter came from: the seed file the build kept, or made at run time (the weight
 * writer's trace says which: weight-file.ts).
 */
export const seedStats: { planted: number; origin: 'kept' | 'made' | 'none' } = { planted: 0, origin: 'none' };

/**
 * Takes a seed from another thread as this thread's SIMD converter, before any conversion here. Its
 * tables stand for the transposed ones too: the thread that made them checked they are the same
 * (simd()), and a seed exists only where they were.
 */
export function plantSimd(seed: SimdSeed): void {
  if (simdState !== undefined) return;
  for (const [src, t] of [['bfloat16', seed.bf16], ['float16', seed.f16]] as const) {
    tables.set(`${src}>float16`, t);
    tables.set(`${src}>float16T`, t);
  }
  simdState = HalfSimd.create(seed.bf16, seed.f16, seed.module) || null;
  if (simdState) seedStats.planted++;
}

/** Shared buffers for the weight file's chunks: inside the SIMD memory when there is one (converted into
 * in place), else plain SharedArrayBuffers. `release` gives them back. */
export function chunkBuffers(count: number, bytes: number): { bufs: Uint8Array[]; release: () => void } {
  const s = simd();
  const lent = s?.lendRing(count, bytes);
  if (s && lent) return { bufs: lent, release: () => s.returnRing() };
  return { bufs: Array.from({ length: count }, () => new Uint8Array(new SharedArrayBuffer(bytes))), release: () => {} };
}

/** A tensor's elements: whole (read once, cached) or, for lazily read tensors, rows into a buffer. */
interface Elements {
  all(): Uint16Array | Uint32Array;
  /** Source bytes of rows [r0, r1) into dest (a lazily read tensor reads them from the checkpoint). */
  rows(r0: number, r1: number, dest: Uint8Array): void;
  /** Drops the cached elements (after the tensor's last rows were produced). */
  done(): void;
  /** Where the whole tensor lies in its checkpoint (lazily read tensors that have file ranges). */
  ranges?: SourceRanges;
}

function elements(t: Tensor): Elements {
  let view: Uint16Array | Uint32Array | undefined;
  const all = () => (view ??= words(t));
  return {
    all,
    rows(r0, r1, dest) {
      if (isLazy(t) && !view) return t.readRows(r0, r1, dest);
      const v = all();
      const rowBytes = dest.length / (r1 - r0);
      dest.set(new Uint8Array(v.buffer, v.byteOffset + r0 * rowBytes, dest.length));
    },
    done() { view = undefined; },
    ranges: isLazy(t) && t.fileRows ? () => t.fileRows!(0, t.shape.length ? t.shape[0] : 1) : undefined,
  };
}

function fill16to16(t: Tensor, el: Elements, r0: number, r1: number, perRow: number, dest: Uint8Array): void {
  const kind = t.dtype as 'bfloat16' | 'float16';
  const s0 = r0 * perRow;
  const cnt = (r1 - r0) * perRow;
  const out = new Uint16Array(dest.buffer, dest.byteOffset, cnt);
  const tab = table(kind, 'float16', false) as Uint16Array;
  const s = cnt >= 64 && cnt % 8 === 0 ? simd() : undefined;
  const whole = el.ranges && { key: t, bytes: numel(t.shape) * 2, at: s0 * 2, ranges: el.ranges };
  if (!s || !s.map(kind, (into) => el.rows(r0, r1, into), cnt * 2, dest, whole)) map16to16(el.all() as Uint16Array, s0, cnt, out, tab);
}

function trans16to16Fill(t: Tensor, el: Elements, rows: number, cols: number, k0: number, k1: number, dest: Uint8Array): void {
  const kind = t.dtype as 'bfloat16' | 'float16';
  const out = new Uint16Array(dest.buffer, dest.byteOffset, (k1 - k0) * rows);
  const tab = table(kind, 'float16', true) as Uint16Array;
  const a = Math.ceil(k0 / 8) * 8, b = Math.floor(k1 / 8) * 8;
  const s = rows % 8 === 0 && a < b ? simd() : undefined;
  if (!s || !s.trans(kind, t, (into) => el.rows(0, rows, into), rows, cols, a, b, dest.subarray((a - k0) * rows * 2, (b - k0) * rows * 2), el.ranges)) {
    return trans16to16(el.all() as Uint16Array, rows, cols, k0, k1, out, tab);
  }
  if (k0 < a) trans16to16(el.all() as Uint16Array, rows, cols, k0, a, out, tab);
  if (b < k1) trans16to16(el.all() as Uint16Array, rows, cols, b, k1, out.subarray((b - k0) * rows), tab);
}

// ---- deferred engine weights ------------------------------------------------------------------------------

const FLOAT_SRC = new Set<DType>(['float32', 'float16', 'bfloat16']);

/** Element view of a tensor's bytes (copied once when its offset is not aligned for the view). */
function words(t: Tensor): Uint16Array | Uint32Array {
  const size = t.dtype === 'float32' ? 4 : 2;
  const n = numel(t.shape);
  const data = t.data; // once: a lazily read tensor reads on every access
  const d = data.byteOffset % size ? data.slice(0, n * size) : data;
  return size === 4 ? new Uint32Array(d.buffer, d.byteOffset, n) : new Uint16Array(d.buffer, d.byteOffset, n);
}

function checkFloat(t: Tensor, what: string): void {
  if (!FLOAT_SRC.has(t.dtype)) throw new InputError(`${what}: cannot convert ${t.dtype} to a float type`);
}

/** `t` in the engine dtype, same shape (norm scales, the embedding table). */
export function engineWeight(t: Tensor, dtype: EngineFloat, what = `tensor of shape [${t.shape.join(', ')}]`): DeferredTensor {
  checkFloat(t, what);
  const outSize = dtype === 'float32' ? 4 : 2;
  const n = numel(t.shape);
  const rows = t.shape.length <= 1 ? n : t.shape[0];
  const perRow = t.shape.length <= 1 ? 1 : n / t.shape[0];
  const el = elements(t);
  return {
    dtype,
    shape: t.shape,
    byteLength: n * outSize,
    job: jobOf(t, dtype, false),
    same: sameBytesKey(t, dtype),
    fill(dest, r0, r1) {
      const s0 = r0 * perRow;
      const cnt = (r1 - r0) * perRow;
      if (t.dtype === 'float32') {
        if (dtype === 'float32') el.rows(r0, r1, dest.subarray(0, cnt * 4));
        else map32to16(el.all() as Uint32Array, s0, cnt, new Uint16Array(dest.buffer, dest.byteOffset, cnt));
      } else if (dtype === 'float16') {
        fill16to16(t, el, r0, r1, perRow, dest);
      } else {
        map16to32(el.all() as Uint16Array, s0, cnt, new Uint32Array(dest.buffer, dest.byteOffset, cnt), table(t.dtype as 'float16', 'float32', false) as Uint32Array);
      }
      if (r1 >= rows) el.done();
    },
  };
}

/**
 * The same checkpoint bytes (file ranges, as read: no cast or cut in between), type and shape, converted
 * plainly to the same dtype, make the same engine bytes. In an engine built for the CPU a tied lm_head
 * (read from the embedding table: checkpoint/hf.ts hfPartsOf) is then the embedding's bytes, as both are
 * [V, H] there (linear.ts), and the weight file holds them once: 525 MB less for a float16 engine of the
 * Llama-3.2-1B shape. Two initializers naming one stretch of external data is plain ONNX.
 */
function sameBytesKey(t: Tensor, dtype: EngineFloat): string | undefined {
  const ranges = isLazy(t) && t.fileRows ? t.fileRows(0, t.shape.length ? t.shape[0] : 1) : undefined;
  return ranges && `${t.dtype}>${dtype} [${t.shape}] ${ranges.map((r) => `${r.file}@${r.pos}+${r.len}`).join(' ')}`;
}

/** A linear's weight [N, K] as the engine's MatMul operand [K, N] in the engine dtype. */
export function engineWeightTransposed(t: Tensor, dtype: EngineFloat, what = `tensor of shape [${t.shape.join(', ')}]`): DeferredTensor {
  checkFloat(t, what);
  if (t.shape.length !== 2) throw new Error(`${what}: expected 2 dimensions, got [${t.shape}]`);
  const [rows, cols] = t.shape;
  const outSize = dtype === 'float32' ? 4 : 2;
  const el = elements(t);
  return {
    dtype,
    shape: [cols, rows],
    byteLength: rows * cols * outSize,
    job: jobOf(t, dtype, true),
    fill(dest, k0, k1) {
      const cnt = (k1 - k0) * rows;
      if (t.dtype === 'float32') {
        if (dtype === 'float32') trans32to32(el.all() as Uint32Array, rows, cols, k0, k1, new Uint32Array(dest.buffer, dest.byteOffset, cnt));
        else trans32to16(el.all() as Uint32Array, rows, cols, k0, k1, new Uint16Array(dest.buffer, dest.byteOffset, cnt));
      } else if (dtype === 'float16') {
        trans16to16Fill(t, el, rows, cols, k0, k1, dest);
      } else {
        trans16to32(el.all() as Uint16Array, rows, cols, k0, k1, new Uint32Array(dest.buffer, dest.byteOffset, cnt), table(t.dtype as 'float16', 'float32', true) as Uint32Array);
      }
      if (k1 >= cols) el.done();
    },
  };
}
