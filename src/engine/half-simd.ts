// bfloat16/float16 → float16 in WebAssembly SIMD, plain and transposed (a linear's [N, K] → [K, N]).
// V8 does not vectorize typed-array loops; eight lanes at a time, with the transpose done in registers
// (8×8 tiles, three rounds of shuffles), costs about a third of the JavaScript loop's CPU time (measured
// 1.3–1.7 vs 3.7–4.7 ns per element on the shared 2-core machine).
//
// The common case is arithmetic: a bf16 with a float16-normal exponent becomes
// sign | (bits - (112 << 7)) << 3 (the 7 mantissa bits fit float16's 10 exactly). A vector (plain) or
// 8×8 tile (transposed) with any lane outside that range (float16 subnormals, overflow, inf, NaN) goes
// through the 65536-entry table of weight-convert.ts instead, so the bytes are the reference path's in
// every case. For float16 sources every non-NaN value maps to itself.
//
// The module is written out byte by byte like src/rank/simd.ts (no WAT toolchain for a few loops).
// Opcodes: WebAssembly core spec §5.4 and the fixed-width SIMD proposal's binary encoding table.

import { leb, sleb, vec, str, section } from '../util/wasm-encode.js';
import { TRANS_FNS, TransposePool, transposeThreads } from './transpose-pool.js';
import type { RawRange } from '../checkpoint/ranged.js';
import { PAGE, WasmFileMap } from '../util/wasm-map.js';
import { onOff } from '../util/env.js';

// Instructions.
const I32 = 0x7f, V128 = 0x7b;
const get = (i: number) => [0x20, ...leb(i)];
const set = (i: number) => [0x21, ...leb(i)];
const i32 = (v: number) => [0x41, ...sleb(v)];
const add = [0x6a], sub = [0x6b], mul = [0x6c], geU = [0x4f], eqz = [0x45];
const simd = (op: number, ...imm: number[]) => [0xfd, ...leb(op), ...imm];
const vload = (offset = 0) => simd(0x00, 0, ...leb(offset));
const vstore = (offset = 0) => simd(0x0b, 0, ...leb(offset));
const splat16 = (v: number) => [...i32(v), ...simd(0x10)];
const vand = simd(0x4e), vor = simd(0x50);
const i16add = simd(0x8e), i16sub = simd(0x91), i16shl = simd(0x8b), i16ltS = simd(0x2f), i16leU = simd(0x34), i16allTrue = simd(0x83);
const shuffle = (lanes: number[]) => simd(0x0d, ...lanes);
const call = (f: number) => [0x10, ...leb(f)];
const load16u = (offset = 0) => [0x2f, 1, ...leb(offset)];
const block = (...body: number[][]) => [0x02, 0x40, ...body.flat(), 0x0b];
const loop = (...body: number[][]) => [0x03, 0x40, ...body.flat(), 0x0b];
const ifElse = (type: number, then: number[], els: number[]) => [0x04, type, ...then, 0x05, ...els, 0x0b];
const brIf = (d: number) => [0x0d, ...leb(d)];
const br = (d: number) => [0x0c, ...leb(d)];

/** Memory layout: the two tables, 64 bytes unused, then the arena JavaScript manages. */
export const TABLE_BF16 = 0;
export const TABLE_F16 = 131072;
const FIXED = 262144 + 64;
const MIN_PAGES = FIXED / 65536 + 1;
/** wasm32 addresses 4 GiB; tensors that do not fit are converted in JavaScript. */
const MAX_PAGES = 65536;

const lanes16 = (pairs: number[][]) => pairs.flat();
// Interleaves of two vectors' 16-, 32- and 64-bit lanes (low and high halves): the 8×8 transpose.
const LO16 = lanes16([[0, 1, 16, 17], [2, 3, 18, 19], [4, 5, 20, 21], [6, 7, 22, 23]]);
const HI16 = LO16.map((x) => x + 8);
const LO32 = [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23];
const HI32 = LO32.map((x) => x + 8);
const LO64 = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
const HI64 = LO64.map((x) => x + 8);

// Function indices.
const F_SLOW = 0;
type Kind = 'bf16' | 'f16';

// Vector constants live in locals, set once per call (V8 does not hoist splats out of loops).
//
// A bf16 lane is in range when a = bits & 0x7fff lies in [0x3880, 0x4780) (exponents 113..142). x86 has
// no unsigned 16-bit compare (V8 lowers i16x8.lt_u to max, compare and invert), so the test is the
// signed one it has (pcmpgtw): a + 0x4780 wraps past 0x7fff exactly when a >= 0x3880, and is then below
// 0x8f00 (as signed) exactly when a < 0x4780. In range, the float16 is sign | (a - (112 << 7)) << 3,
// and the shift drops every bit above a's low 13, so it is also (bits << 3) - 0xc000 (mod 2^16), which
// needs no masked copy of the bits. Both forms give the reference path's bits (a test runs all 65536).
const CONSTS = [0x7fff, 0x4780, 0x8f00, 0x8000, 0xc000, 0x7c00];
const initConsts = (c: number) => CONSTS.flatMap((v, i) => [...splat16(v), ...set(c + i)]);
/** The in-range mask of the bf16 vector in local v (constants from local c), left on the stack. */
const bf16InRange = (v: number, c: number) => [...get(v), ...get(c), ...vand, ...get(c + 1), ...i16add, ...get(c + 2), ...i16ltS];
/** The float16 of the in-range bf16 vector in local v, left on the stack. */
const bf16ToF16 = (v: number, c: number) => [...get(v), ...i32(3), ...i16shl, ...get(c + 4), ...i16sub, ...get(v), ...get(c + 3), ...vand, ...vor];

/**
 * Converts the vector in local `v` (constants from local `c`) and leaves the result on the stack:
 * arithmetic when all 8 lanes are in range, else every lane through the table.
 */
const convert = (kind: Kind, v: number, c: number): number[] => kind === 'bf16'
  ? [
    ...bf16InRange(v, c), ...i16allTrue,
    ...ifElse(V128, bf16ToF16(v, c), [...get(v), ...i32(TABLE_BF16), ...call(F_SLOW)]),
  ]
  : [
    ...get(v), ...get(c), ...vand, ...get(c + 5), ...i16leU, ...i16allTrue,
    ...ifElse(V128, get(v), [...get(v), ...i32(TABLE_F16), ...call(F_SLOW)]),
  ];

interface Func { type: number; locals: number[][]; code: number[] }

function funcBodies(): { types: number[][]; funcs: Func[]; exports: [string, number][] } {
  const types = [
    [0x60, 2, V128, I32, 1, V128], // (v128, i32) -> v128
    [0x60, 3, I32, I32, I32, 0], // (src, dst, n8)
    [0x60, 6, I32, I32, I32, I32, I32, I32, 0], // (src, dst, rows, cols, k0, k1)
  ];
  // slow(v, table): every lane through the table, lane by lane in registers (no scratch memory: worker
  // threads run these functions on the same memory at once, transpose-pool.ts).
  const slow: Func = {
    type: 0,
    locals: [],
    code: [
      ...Array.from({ length: 8 }, (_, l) => [
        ...get(0),
        ...get(0), ...simd(0x19, l), ...i32(1), 0x74, ...get(1), ...add, ...load16u(), // table[lane l]
        ...simd(0x1a, l), ...set(0), // i16x8.replace_lane l
      ]).flat(),
      ...get(0),
    ],
  };
  // map(src, dst, n8): n8 vectors. Locals: 3 = i (byte offset), 4 = end, 5 = v, 6.. constants, then
  // W0..W3 and their joint in-range mask M. Four vectors a round share one all-true test and branch
  // (that test is most of a lone vector's work on x86: V8 lowers i16x8.all_true to ~5 instructions);
  // a round with a lane out of range converts its vectors one by one as the single-vector loop does.
  // Each round loads all four before it stores, so a conversion in place (src == dst) stays correct.
  const W = 6 + CONSTS.length, M = W + 4;
  const inRange = (kind: Kind, v: number) => kind === 'bf16' ? bf16InRange(v, 6) : [...get(v), ...get(6), ...vand, ...get(6 + 5), ...i16leU];
  const converted = (kind: Kind, v: number) => kind === 'bf16' ? bf16ToF16(v, 6) : get(v);
  const map = (kind: Kind): Func => ({
    type: 1,
    locals: [[2, I32], [1 + CONSTS.length + 5, V128]],
    code: [
      ...initConsts(6),
      ...get(2), ...i32(-4), [0x71], ...i32(4), [0x74], ...set(4), // end of the rounds = (n8 & ~3) * 16
      ...block(loop(
        get(3), get(4), geU, brIf(1),
        ...[0, 1, 2, 3].map((j) => [...get(0), ...get(3), ...add, ...vload(16 * j), ...set(W + j)]),
        ...[0, 1, 2, 3].map((j) => [...inRange(kind, W + j), ...(j ? [...get(M), ...vand] : []), ...set(M)]),
        get(M), i16allTrue,
        ifElse(0x40,
          [0, 1, 2, 3].flatMap((j) => [...get(1), ...get(3), ...add, ...converted(kind, W + j), ...vstore(16 * j)]),
          [0, 1, 2, 3].flatMap((j) => [...get(1), ...get(3), ...add, ...convert(kind, W + j, 6), ...vstore(16 * j)])),
        get(3), i32(64), add, set(3), br(0),
      )),
      ...get(2), ...i32(4), [0x74], ...set(4), // end = n8 * 16: the last n8 % 4 vectors one by one
      ...block(loop(
        get(3), get(4), geU, brIf(1),
        get(1), get(3), add,
        get(0), get(3), add, vload(), set(5), convert(kind, 5, 6),
        vstore(),
        get(3), i32(16), add, set(3), br(0),
      )),
    ].flat(),
  });
  // trans(src, dst, rows, cols, k0, k1): rows % (8 * group) == 0, k0 and k1 multiples of 8. For each
  // step of 8 columns, `group` 8×8 tiles stacked along the rows are done, so every destination row gets
  // 16 * group contiguous bytes at once (with power-of-two strides, 16 bytes at a time thrash the cache).
  // Locals: 6 = n0, 7 = k, 8 = p (source address), 9 = q (destination address), 10 = rowStride (cols*2),
  // 11 = outStride (rows*2), 12 = the address of the row being loaded or stored (stepped by a stride:
  // no multiply per row), 13..20 = v0..v7, 21..28 = t0..t7, 29.. constants.
  const trans = (kind: Kind, group: number): Func => {
    const V = (i: number) => 13 + i, T = (i: number) => 21 + i, C = 29, R = 12;
    const step = (stride: number) => [...get(R), ...get(stride), ...add, ...set(R)];
    // The 8 source vectors of the tile, converted by arithmetic; their in-range masks are ANDed (in T(1))
    // so one test per tile decides, and the rare tile with a lane out of range is redone by the table.
    const tile: number[] = [];
    const rowAddr = (i: number) => [...get(8), ...(i ? [...get(10), ...i32(i), ...mul, ...add] : [])];
    tile.push(...get(8), ...set(R));
    for (let i = 0; i < 8; i++) {
      tile.push(...(i ? step(10) : []), ...get(R), ...vload(), ...set(V(i)));
      if (kind === 'bf16') {
        tile.push(...bf16InRange(V(i), C), ...(i ? [...get(T(1)), ...vand] : []), ...set(T(1)), ...bf16ToF16(V(i), C), ...set(V(i)));
      } else {
        tile.push(...get(V(i)), ...get(C), ...vand, ...get(C + 5), ...i16leU, ...(i ? [...get(T(1)), ...vand] : []), ...set(T(1)));
      }
    }
    const redo: number[] = [];
    for (let i = 0; i < 8; i++) redo.push(...rowAddr(i), ...vload(), ...i32(kind === 'bf16' ? TABLE_BF16 : TABLE_F16), ...call(F_SLOW), ...set(V(i)));
    tile.push(...get(T(1)), ...i16allTrue, ...eqz, 0x04, 0x40, ...redo, 0x0b);
    const sh = (mask: number[], a: number, b: number, out: number) => [...get(a), ...get(b), ...shuffle(mask), ...set(out)];
    tile.push(
      // 16-bit interleave of row pairs.
      ...sh(LO16, V(0), V(1), T(0)), ...sh(HI16, V(0), V(1), T(1)), ...sh(LO16, V(2), V(3), T(2)), ...sh(HI16, V(2), V(3), T(3)),
      ...sh(LO16, V(4), V(5), T(4)), ...sh(HI16, V(4), V(5), T(5)), ...sh(LO16, V(6), V(7), T(6)), ...sh(HI16, V(6), V(7), T(7)),
      // 32-bit.
      ...sh(LO32, T(0), T(2), V(0)), ...sh(HI32, T(0), T(2), V(1)), ...sh(LO32, T(1), T(3), V(2)), ...sh(HI32, T(1), T(3), V(3)),
      ...sh(LO32, T(4), T(6), V(4)), ...sh(HI32, T(4), T(6), V(5)), ...sh(LO32, T(5), T(7), V(6)), ...sh(HI32, T(5), T(7), V(7)),
      // 64-bit: columns.
      ...sh(LO64, V(0), V(4), T(0)), ...sh(HI64, V(0), V(4), T(1)), ...sh(LO64, V(1), V(5), T(2)), ...sh(HI64, V(1), V(5), T(3)),
      ...sh(LO64, V(2), V(6), T(4)), ...sh(HI64, V(2), V(6), T(5)), ...sh(LO64, V(3), V(7), T(6)), ...sh(HI64, V(3), V(7), T(7)),
    );
    tile.push(...get(9), ...set(R));
    for (let j = 0; j < 8; j++) tile.push(...(j ? step(11) : []), ...get(R), ...get(T(j)), ...vstore());
    const tiles: number[] = [];
    for (let g = 0; g < group; g++) {
      tiles.push(
        // p = src + ((n0 + 8g) * cols + k) * 2;  q = dst + ((k - k0) * rows + n0 + 8g) * 2
        ...get(0), ...get(6), ...(g ? [...i32(8 * g), ...add] : []), ...get(3), ...mul, ...get(7), ...add, ...i32(1), 0x74, ...add, ...set(8),
        ...get(1), ...get(7), ...get(4), ...sub, ...get(2), ...mul, ...get(6), ...add, ...(g ? [...i32(8 * g), ...add] : []), ...i32(1), 0x74, ...add, ...set(9),
        ...tile,
      );
    }
    return {
      type: 2,
      locals: [[7, I32], [16 + CONSTS.length, V128]],
      code: [
        ...initConsts(C),
        ...get(3), ...i32(1), [0x74], ...set(10),
        ...get(2), ...i32(1), [0x74], ...set(11),
        ...i32(0), ...set(6),
        ...block(loop(
          get(6), get(2), geU, brIf(1),
          get(4), set(7),
          block(loop(
            get(7), get(5), geU, brIf(1),
            tiles,
            get(7), i32(8), add, set(7), br(0),
          )),
          get(6), i32(8 * group), add, set(6), br(0),
        )),
      ].flat(),
    };
  };
  const funcs = [slow, map('bf16'), map('f16'), trans('bf16', 1), trans('f16', 1), trans('bf16', 4), trans('f16', 4)];
  const names = ['map_bf16', 'map_f16', 'trans_bf16', 'trans_f16', 'trans4_bf16', 'trans4_f16'];
  return { types, funcs, exports: names.map((n, i) => [n, i + 1]) };
}

/** The module's bytes (made here, or kept by the build: simd-seed-file.ts). */
export function halfSimdModuleBytes(): Uint8Array<ArrayBuffer> {
  const { types, funcs, exports } = funcBodies();
  const body = (f: { locals: number[][]; code: number[] }) => {
    const inner = [...vec(f.locals.map(([n, t]) => [...leb(n), t])), ...f.code, 0x0b];
    return [...leb(inner.length), ...inner];
  };
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec(types)),
    // The memory is imported and shared, so the file writer's chunk buffers can live in it (a
    // SharedArrayBuffer the hash worker reads) and tensors are converted straight into them.
    ...section(2, vec([[...str('env'), ...str('mem'), 0x02, 0x03, ...leb(MIN_PAGES), ...leb(MAX_PAGES)]])),
    ...section(3, vec(funcs.map((f) => leb(f.type)))),
    ...section(7, vec(exports.map(([n, i]) => [...str(n), 0x00, ...leb(i)]))),
    ...section(10, vec(funcs.map(body))),
  ]);
}

type MapFn = (src: number, dst: number, n8: number) => void;
type TransFn = (src: number, dst: number, rows: number, cols: number, k0: number, k1: number) => void;

const align = (n: number, a = 64) => Math.ceil(n / a) * a;

/** Smaller sources are read, not mapped: a mapping and its proof cost several system calls. */
let mapMinBytes = 1 << 20;
/** TPRUN_MAP_SOURCE=0: sources are always read into the memory (the path before mapping). */
let mapWanted = onOff('TPRUN_MAP_SOURCE');

/** Whether checkpoint windows are mapped, and from what size (tests compare both paths in one process). */
export function mapSources(on: boolean, minBytes = 1 << 20): void {
  mapWanted = on;
  mapMinBytes = minBytes;
}

/** Where a source tensor's bytes lie in its checkpoint, in order (lazy-shard.ts), or undefined. */
export type SourceRanges = () => RawRange[] | undefined;

/** Ranges that follow each other in one file, as one; undefined when they do not. */
function contiguous(rs: RawRange[] | undefined): { fd: number; pos: number; len: number } | undefined {
  if (!rs?.length) return undefined;
  let { fd, pos, len } = rs[0];
  for (let i = 1; i < rs.length; i++) {
    if (rs[i].fd !== fd || rs[i].pos !== pos + len) return undefined;
    len += rs[i].len;
  }
  return { fd, pos, len };
}

/** Transposes of smaller tensors never start worker threads (small engines build as before). */
const POOL_MIN_BYTES = 2 << 20;

/**
 * One instance per thread. Its memory holds the tables, the file writer's chunk ring (lent to one
 * writer at a time) and an arena where the tensor being converted is staged: its checkpoint pages
 * mapped there where they can be (util/wasm-map.ts), else its bytes copied in.
 */
export class HalfSimd {
  private mem: WebAssembly.Memory;
  /** The compiled module (worker threads are given it: weight-convert.ts simdSeed). */
  readonly module: WebAssembly.Module;
  /** Workers sharing the transposes while a weight file is written (the ring is lent). */
  private pool: TransposePool | undefined;
  /** Whether a writer holds the ring; the pool starts at the first transpose worth sharing. */
  private poolWanted = false;
  private fns: { map_bf16: MapFn; map_f16: MapFn; trans_bf16: TransFn; trans_f16: TransFn; trans4_bf16: TransFn; trans4_f16: TransFn };
  /** The source tensor whose bytes are in the arena (transposes read it whole, chunk after chunk), and
   *  where they start: copied there by `stage`, or its file's pages mapped there (wasm-map.ts). */
  private staged: object | undefined;
  private srcAt = 0;
  /** Maps checkpoint windows into this memory; null where it cannot (no koffi, TPRUN_MAP_SOURCE=0). */
  private files: WasmFileMap | null | undefined;
  /** Start of the arena: after the tables and the ring. */
  private arena = FIXED;
  /** Where memory left unusable by a window that could not be released starts (unstage); none: Infinity. */
  private lostFrom = Infinity;
  private ringLent = false;
  /** ArrayBuffer objects (one per growth of the memory) of the views handed out: all this memory. */
  private own = new WeakSet<ArrayBufferLike>();

  private constructor(mem: WebAssembly.Memory, module: WebAssembly.Module, inst: WebAssembly.Instance, bf16: Uint16Array, f16: Uint16Array) {
    this.mem = mem;
    this.module = module;
    this.fns = inst.exports as never;
    new Uint16Array(this.mem.buffer, TABLE_BF16, 65536).set(bf16);
    new Uint16Array(this.mem.buffer, TABLE_F16, 65536).set(f16);
  }

  /**
   * undefined where the runtime has no wasm SIMD (or shared memory): callers convert in JavaScript.
   * `module`: this module compiled by another thread (HalfSimd.module of its instance, posted to this
   * one), which spares encoding and compiling it again.
   */
  static create(bf16Table: Uint16Array, f16Table: Uint16Array, module?: WebAssembly.Module): HalfSimd | undefined {
    try {
      const mem = new WebAssembly.Memory({ initial: MIN_PAGES, maximum: MAX_PAGES, shared: true } as WebAssembly.MemoryDescriptor);
      module ??= new WebAssembly.Module(halfSimdModuleBytes());
      const inst = new WebAssembly.Instance(module, { env: { mem } });
      return new HalfSimd(mem, module, inst, bf16Table, f16Table);
    } catch {
      return undefined;
    }
  }

  /** Makes [0, end) addressable; false when that is beyond wasm32's reach. */
  private reserve(end: number): boolean {
    if (end > MAX_PAGES * 65536) return false;
    const have = this.mem.buffer.byteLength;
    if (end <= have) return true;
    try {
      this.mem.grow(Math.ceil((end - have) / 65536));
      return true;
    } catch {
      return false; // no memory to commit (a ulimit, say): the caller converts in JavaScript
    }
  }

  private bytes(at: number, n: number): Uint8Array {
    const buf = this.mem.buffer;
    this.own.add(buf);
    return new Uint8Array(buf, at, n);
  }

  /** Where `view` lies in this memory, or -1 when it is other memory. */
  private addressOf(view: Uint8Array): number {
    return this.own.has(view.buffer) ? view.byteOffset : -1;
  }

  /**
   * `count` shared buffers of `bytes` each inside this memory, for the weight file's chunks; undefined
   * while another writer holds them. Give them back with returnRing().
   */
  lendRing(count: number, bytes: number): Uint8Array[] | undefined {
    if (this.ringLent) return undefined;
    const stride = align(bytes);
    // Before the checks: a window left where the ring would start would make its buffers read-only, and
    // letting it go is what may find its pages lost (then the ring must stay below them).
    this.unstage();
    if (FIXED + count * stride > this.lostFrom || !this.reserve(FIXED + count * stride)) return undefined;
    this.ringLent = true;
    this.arena = Math.max(this.arena, FIXED + count * stride);
    this.poolWanted = true;
    return Array.from({ length: count }, (_, i) => this.bytes(FIXED + i * stride, bytes));
  }

  returnRing(): void {
    this.ringLent = false;
    this.unstage();
    this.poolWanted = false;
    this.pool?.stop();
    this.pool = undefined;
  }

  /**
   * Forgets the staged source; a mapped window gets the memory's own pages back (writable again). Where
   * that fails the window's memory is never written again: the arena moves past it (the ring lies below
   * the arena, and lendRing keeps below the lost pages), and sources are read from then on.
   */
  private unstage(): void {
    this.staged = undefined;
    if (this.files && !this.files.release()) this.lose(this.files.lost);
  }

  private lose([from, to]: [number, number]): void {
    this.files = null;
    this.lostFrom = Math.min(this.lostFrom, from);
    this.arena = Math.max(this.arena, align(to, PAGE));
  }

  /** Start of the arena as a page boundary (where a window is mapped, and a staged source copied). */
  private get base(): number {
    return align(this.arena, PAGE);
  }

  /**
   * The address of `key`'s source bytes (`bytes` of them, lying at `ranges` in its checkpoint) mapped
   * into the arena, mapping them unless they are already; -1 when they cannot be (ranges in several
   * places, no room, no koffi): then the caller stages them. The arena's scratch starts past the window.
   */
  private mapSource(key: object, bytes: number, ranges: SourceRanges | undefined): number {
    if (this.staged === key) return this.srcAt;
    if (!ranges || !mapWanted || this.files === null || bytes < mapMinBytes) return -1;
    const r = contiguous(ranges());
    if (!r || r.len !== bytes || !this.reserve(this.base + WasmFileMap.span(bytes))) return -1;
    this.unstage();
    this.files ??= WasmFileMap.create(this.mem) ?? null;
    const at = this.files ? this.files.map(this.base, r.fd, r.pos, r.len) : -1;
    // A window whose failed mapping could not be undone either: its memory is lost (unstage says why).
    if (this.files && this.files.lost[1] > 0) this.lose(this.files.lost);
    if (at < 0) return -1;
    this.staged = key;
    this.srcAt = at;
    return at;
  }

  /**
   * 16-bit elements → dst (`bytes` of them), the source written into the arena by `stage`; false when
   * it did not fit (then nothing was written). `whole`: the tensor these elements are part of (`at`
   * bytes into its `bytes`) and where it lies in its checkpoint: its file pages are then mapped into
   * this memory and converted from there, not read into it first.
   */
  map(kind: 'bfloat16' | 'float16', stage: (into: Uint8Array) => void, bytes: number, dst: Uint8Array, whole?: { key: object; bytes: number; at: number; ranges: SourceRanges }): boolean {
    const n = bytes;
    if (n % 16) throw new Error('HalfSimd.map: a whole number of 8-element vectors is required');
    const f = kind === 'bfloat16' ? this.fns.map_bf16 : this.fns.map_f16;
    const direct = this.addressOf(dst);
    if (direct >= 0) {
      const src = whole ? this.mapSource(whole.key, whole.bytes, whole.ranges) : -1;
      if (src >= 0) {
        f(src + whole!.at, direct, n / 16);
        return true;
      }
      // Read straight into the destination (a chunk of the file) and converted in place: each vector is
      // loaded before it is stored, so nothing is staged or copied. The arena (a staged transpose) is kept.
      stage(dst.subarray(0, n));
      f(direct, direct, n / 16);
      return true;
    }
    this.unstage(); // first: a window it cannot release moves the arena (base) past it
    if (!this.reserve(this.base + 2 * n)) return false;
    stage(this.bytes(this.base, n));
    f(this.base, this.base + n, n / 16);
    dst.set(this.bytes(this.base + n, n));
    return true;
  }

  /**
   * Rows [k0, k1) of the transpose of `src` ([rows, cols] 16-bit elements) into dst; rows % 8 == 0,
   * k0 % 8 == 0, k1 % 8 == 0. The source is staged once (by `stage`, writing its bytes into the arena)
   * and reused while the same `key` is asked for.
   * false when it did not fit (then nothing was written).
   */
  trans(kind: 'bfloat16' | 'float16', key: object, stage: (into: Uint8Array) => void, rows: number, cols: number, k0: number, k1: number, dst: Uint8Array, ranges?: SourceRanges): boolean {
    const srcBytes = rows * cols * 2;
    const outBytes = (k1 - k0) * rows * 2;
    const direct = this.addressOf(dst);
    // Past the source, mapped (a window of whole pages) or staged; from `base`, which a window that
    // cannot be released moves (unstage), so it is taken again after each unstage.
    const end = () => this.base + WasmFileMap.span(srcBytes) + (direct < 0 ? outBytes : 0);
    if (!this.reserve(end())) return false;
    let src = this.mapSource(key, srcBytes, ranges);
    if (src < 0) {
      if (this.staged !== key) {
        this.unstage();
        if (!this.reserve(end())) return false;
        stage(this.bytes(this.base, srcBytes));
        this.staged = key;
        this.srcAt = this.base;
      }
      src = this.srcAt;
    }
    const scratch = this.base + WasmFileMap.span(srcBytes);
    const out = direct < 0 ? scratch : direct;
    const name = rows % 32 ? (kind === 'bfloat16' ? 'trans_bf16' : 'trans_f16') : (kind === 'bfloat16' ? 'trans4_bf16' : 'trans4_f16');
    const f = this.fns[name];
    if (this.poolWanted && !this.pool && srcBytes >= POOL_MIN_BYTES) this.pool = TransposePool.start(this.module, this.mem, transposeThreads());
    if (this.pool) this.pool.run(TRANS_FNS.indexOf(name), src, out, rows, cols, k0, k1, (a, b, d) => f(src, d, rows, cols, a, b));
    else f(src, out, rows, cols, k0, k1);
    if (direct < 0) dst.set(this.bytes(out, outBytes));
    return true;
  }
}
