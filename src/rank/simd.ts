// Large reductions in WebAssembly SIMD. V8 cannot vectorize a typed-array loop (each float32 element is
// widened, added and narrowed one at a time); a 128-bit wasm loop is several times faster, memory bound.
// Wasm only reaches its own memory, so the world receives peers' data straight into this arena's memory
// and copies its own contribution in once. The module is written out here byte by byte: a dozen
// instructions do not justify a WAT toolchain.
import type { CommDType, ReduceOp } from './types.js';
import { cat, leb, sleb, vec, str, section } from '../util/wasm-encode.js';

// SIMD opcodes (0xfd prefix, LEB128 sub-opcode) of `dst[i] = dst[i] OP src[i]` per element type.
const OPS: Record<string, number> = {
  'float32/sum': 228, 'float32/min': 232, 'float32/max': 233,
  'float64/sum': 240, 'float64/min': 244, 'float64/max': 245,
  'int32/sum': 174, 'int32/min': 182, 'int32/max': 184,
  'int8/sum': 110, 'int8/min': 118, 'int8/max': 120,
  'uint8/sum': 110, 'uint8/min': 119, 'uint8/max': 121,
};
const NAMES = Object.keys(OPS);
const SUPPORTED: Partial<Record<string, Partial<Record<string, true>>>> = {};
for (const n of NAMES) {
  const [dtype, op] = n.split('/');
  (SUPPORTED[dtype] ??= {})[op] = true;
}

/**
 * Function i: `dst[k] = a[k] OP b[k]` over 16-byte vectors; NAMES.length + i: the same four vectors (64
 * bytes) per turn of the loop. One vector per turn ran at 12-19 GB/s of output on 64 KiB in L2, where a
 * copy of the same bytes ran at 31-36 GB/s: the loop's counter, compare and branch per vector were the
 * limit, not memory, and the large all-reduce reduces data that peers have just written (in cache).
 */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  const loops = (unroll: number) => NAMES.map((n) => body3(OPS[n], unroll));
  return new Uint8Array(cat(
    [0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    section(1, vec([[0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 0]])),
    section(3, vec(NAMES.map(() => [0]).concat(NAMES.map(() => [0])))),
    section(5, vec([[0x00, 1]])),
    section(7, vec(NAMES.map((n, i) => cat(str(`${n}/3`), 0x00, leb(i)))
      .concat(NAMES.map((n, i) => cat(str(`${n}/3x4`), 0x00, leb(NAMES.length + i))), [cat(str('mem'), 0x02, 0)]))),
    section(10, vec(loops(1).concat(loops(UNROLL)))),
  ));
}

/** The SIMD opcode of `op` on `dtype`'s lanes, where wasm has one. */
export const simdOpcode = (dtype: CommDType, op: ReduceOp): number | undefined => OPS[`${dtype}/${op}`];

/**
 * The body (code section entry) of
 * (func (param $d i32) (param $a i32) (param $b i32) (param $n i32) (local $i i32)
 *   block loop  br_if 1 (i >= n)
 *     v128.store offset=16u (d + i) (OP (v128.load offset=16u (a + i)) (v128.load offset=16u (b + i)))  for u < unroll
 *     i += 16 * unroll; br 0  end end)
 * It runs whole turns: n should be a multiple of 16 * unroll. d may equal a: then it is the 2-address
 * loop over memory the caller did not have to copy in first.
 */
export function body3(op: number, unroll: number): number[] {
  const at = (p: number) => [0x20, p, 0x20, 4, 0x6a];
  const vector = (u: number) => cat(
    at(0), at(1), 0xfd, 0, 4, leb(16 * u), at(2), 0xfd, 0, 4, leb(16 * u), 0xfd, leb(op), 0xfd, 0x0b, 4, leb(16 * u),
  );
  const code = cat(
    [0x02, 0x40, 0x03, 0x40],
    [0x20, 4, 0x20, 3, 0x4f, 0x0d, 1],
    ...Array.from({ length: unroll }, (_, u) => vector(u)),
    [0x20, 4, 0x41], sleb(16 * unroll), [0x6a, 0x21, 4],
    [0x0c, 0, 0x0b, 0x0b, 0x0b],
  );
  return cat(leb(code.length + 3), 1, 1, 0x7f, code);
}

/** Vectors per turn of the unrolled loop. */
export const UNROLL = 4;
const UNROLL_BYTES = 16 * UNROLL;

type Fn3 = (dst: number, a: number, b: number, n: number) => void;
let compiled: WebAssembly.Module | undefined;
/** The background compile that precompile() started, while it runs. */
let compiling: Promise<void> | undefined;

export class SimdArena {
  readonly mem: WebAssembly.Memory;
  /** The loops by dtype and op: one vector per turn, and four. */
  private byType: Partial<Record<CommDType, Record<ReduceOp, [Fn3, Fn3]>>> = {};

  private constructor(inst: WebAssembly.Instance) {
    this.mem = inst.exports.mem as WebAssembly.Memory;
    for (const n of NAMES) {
      const [dtype, op] = n.split('/') as [CommDType, ReduceOp];
      (this.byType[dtype] ??= {} as Record<ReduceOp, [Fn3, Fn3]>)[op] = [inst.exports[`${n}/3`] as unknown as Fn3, inst.exports[`${n}/3x4`] as unknown as Fn3];
    }
  }

  /** Grows the memory to at least `bytes` (once, before anything maps into it: growing may move it). */
  reserve(bytes: number): void {
    const have = this.mem.buffer.byteLength;
    if (bytes > have) this.mem.grow(Math.ceil((bytes - have) / 65536));
  }

  /**
   * mem[dst, dst+n) = mem[srcs[0]] op mem[srcs[1]] op ..., in that order, straight from wherever the
   * sources are in this memory (dst may be srcs[0]). Offsets must be multiples of the element size.
   */
  reduce3(dtype: CommDType, op: ReduceOp, dst: number, srcs: number[], n: number, elemBytes: number): void {
    // Looked up without building the "dtype/op" string: this runs once per small allReduce.
    const [f, f4] = this.byType[dtype]![op];
    const vecBytes = n - (n % 16);
    const wide = vecBytes - (vecBytes % UNROLL_BYTES);
    let a = srcs[0];
    for (let k = 1; k < srcs.length; k++) {
      const b = srcs[k];
      if (wide > 0) f4(dst, a, b, wide);
      if (vecBytes > wide) f(dst + wide, a + wide, b + wide, vecBytes - wide);
      if (vecBytes < n) {
        const buf = this.mem.buffer;
        if (a !== dst) new Uint8Array(buf, dst + vecBytes, n - vecBytes).set(new Uint8Array(buf, a + vecBytes, n - vecBytes));
        tail(dtype, op, new Uint8Array(buf, dst, n), new Uint8Array(buf, srcs[k], n), vecBytes / elemBytes);
      }
      a = dst;
    }
  }

  /**
   * Starts compiling the module on V8's compile threads (WebAssembly.compile), so that the arenas made
   * later instantiate it without compiling on the main thread (1.8-8 ms of a fresh process's first
   * allReduce, issue #14). A world calls it when it starts; create() compiles synchronously as before
   * where this has not finished.
   */
  static precompile(): void {
    if (compiled || compiling) return;
    try {
      compiling = WebAssembly.compile(moduleBytes()).then((m) => { compiled ??= m; }, () => { compiling = undefined; });
    } catch {
      // no WebAssembly: create() says so to its callers
    }
  }

  static create(): SimdArena | undefined {
    try {
      // One compiled module per process: a world makes an arena for its areas and another for the message path.
      compiled ??= new WebAssembly.Module(moduleBytes());
      return new SimdArena(new WebAssembly.Instance(compiled));
    } catch {
      return undefined; // no wasm SIMD in this runtime: callers reduce in JavaScript
    }
  }

  static supports(dtype: CommDType, op: ReduceOp): boolean {
    return SUPPORTED[dtype]?.[op] === true;
  }

  /** `slots` views of `bytes` each (16-byte aligned), valid until the next call. */
  slots(count: number, bytes: number): Uint8Array[] {
    const stride = Math.ceil(bytes / 16) * 16;
    const need = stride * count;
    const have = this.mem.buffer.byteLength;
    if (need > have) this.mem.grow(Math.ceil((need - have) / 65536));
    return Array.from({ length: count }, (_, i) => new Uint8Array(this.mem.buffer, i * stride, bytes));
  }

  /** slots[0] = slots[0] op slots[1] op ... op slots[k-1], in that order. */
  reduce(dtype: CommDType, op: ReduceOp, slots: Uint8Array[], elemBytes: number): void {
    const dst = slots[0].byteOffset;
    this.reduce3(dtype, op, dst, slots.map((sl) => sl.byteOffset), slots[0].byteLength, elemBytes);
  }
}

/** The last few elements that do not fill a 16-byte vector. */
function tail(dtype: CommDType, op: ReduceOp, dst: Uint8Array, src: Uint8Array, from: number): void {
  const C = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array }[dtype as 'float32']!;
  const d = new C(dst.buffer, dst.byteOffset, dst.byteLength / C.BYTES_PER_ELEMENT);
  const s = new C(src.buffer, src.byteOffset, src.byteLength / C.BYTES_PER_ELEMENT);
  for (let i = from; i < d.length; i++) {
    const x = d[i], y = s[i];
    // Math.max/min rank -0 below +0 and let a NaN win, as the vector loop's f32x4/f64x2 max/min do: a
    // rank whose short call ended in WebAssembly (./oneshot-wasm.ts) and one whose call ended here agree.
    d[i] = op === 'sum' ? x + y : op === 'max' ? Math.max(x, y) : Math.min(x, y);
  }
}
