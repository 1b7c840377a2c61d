// Large reductions in WebAssembly SIMD. V8 cannot vectorize a typed-array loop (each float32 element is
// widened, added and narrowed one at a time); a 128-bit wasm loop is several times faster, memory bound.
// Wasm only reaches its own memory, so the world receives peers' data straight into this arena's memory
// and copies its own contribution in once. The module is written out here byte by byte: a dozen
// instructions do not justify a WAT toolchain.
import type { CommDType, ReduceOp } from './types.js';
import { leb, vec, str, section } from '../util/wasm-encode.js';

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

/** Function i < NAMES.length: 2-address (dst, src, end); NAMES.length + i: 3-address (dst, a, b, n). */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  // (func (param $dst i32) (param $src i32) (param $end i32)
  //   block loop  br_if 1 (dst >= end)
  //     v128.store dst (OP (v128.load dst) (v128.load src)); dst += 16; src += 16; br 0  end end)
  const body = (op: number): number[] => {
    const code = [
      0x02, 0x40, 0x03, 0x40,
      0x20, 0, 0x20, 2, 0x4f, 0x0d, 1,
      0x20, 0, 0x20, 0, 0xfd, 0, 4, 0, 0x20, 1, 0xfd, 0, 4, 0, 0xfd, ...leb(op), 0xfd, 0x0b, 4, 0,
      0x20, 0, 0x41, 16, 0x6a, 0x21, 0, 0x20, 1, 0x41, 16, 0x6a, 0x21, 1,
      0x0c, 0, 0x0b, 0x0b, 0x0b,
    ];
    return [...leb(code.length + 1), 0, ...code];
  };
  // (func (param $d i32) (param $a i32) (param $b i32) (param $n i32) (local $i i32)
  //   block loop  br_if 1 (i >= n)
  //     v128.store (d + i) (OP (v128.load (a + i)) (v128.load (b + i))); i += 16; br 0  end end)
  // d may equal a: then it is the 2-address loop over memory the caller did not have to copy in first.
  const body3 = (op: number): number[] => {
    const at = (p: number) => [0x20, p, 0x20, 4, 0x6a];
    const code = [
      0x02, 0x40, 0x03, 0x40,
      0x20, 4, 0x20, 3, 0x4f, 0x0d, 1,
      ...at(0), ...at(1), 0xfd, 0, 4, 0, ...at(2), 0xfd, 0, 4, 0, 0xfd, ...leb(op), 0xfd, 0x0b, 4, 0,
      0x20, 4, 0x41, 16, 0x6a, 0x21, 4,
      0x0c, 0, 0x0b, 0x0b, 0x0b,
    ];
    return [...leb(code.length + 3), 1, 1, 0x7f, ...code];
  };
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec([[0x60, 3, 0x7f, 0x7f, 0x7f, 0], [0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 0]])),
    ...section(3, vec([...NAMES.map(() => [0]), ...NAMES.map(() => [1])])),
    ...section(5, vec([[0x00, 1]])),
    ...section(7, vec([...NAMES.map((n, i) => [...str(n), 0x00, ...leb(i)]), ...NAMES.map((n, i) => [...str(`${n}/3`), 0x00, ...leb(NAMES.length + i)]),
      [...str('mem'), 0x02, 0]])),
    ...section(10, vec([...NAMES.map((n) => body(OPS[n])), ...NAMES.map((n) => body3(OPS[n]))])),
  ]);
}

type Fn = (dst: number, src: number, end: number) => void;
type Fn3 = (dst: number, a: number, b: number, n: number) => void;

export class SimdArena {
  readonly mem: WebAssembly.Memory;
  private fns: Record<string, Fn>;
  /** The 3-address functions by dtype and op. */
  private byType: Partial<Record<CommDType, Record<ReduceOp, Fn3>>> = {};

  private constructor(inst: WebAssembly.Instance) {
    this.mem = inst.exports.mem as WebAssembly.Memory;
    this.fns = inst.exports as unknown as Record<string, Fn>;
    for (const n of NAMES) {
      const [dtype, op] = n.split('/') as [CommDType, ReduceOp];
      (this.byType[dtype] ??= {} as Record<ReduceOp, Fn3>)[op] = inst.exports[`${n}/3`] as unknown as Fn3;
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
    const f = this.byType[dtype]![op];
    const vecBytes = n - (n % 16);
    let a = srcs[0];
    for (let k = 1; k < srcs.length; k++) {
      f(dst, a, srcs[k], vecBytes);
      if (vecBytes < n) {
        const buf = this.mem.buffer;
        if (a !== dst) new Uint8Array(buf, dst + vecBytes, n - vecBytes).set(new Uint8Array(buf, a + vecBytes, n - vecBytes));
        tail(dtype, op, new Uint8Array(buf, dst, n), new Uint8Array(buf, srcs[k], n), vecBytes / elemBytes);
      }
      a = dst;
    }
  }

  static create(): SimdArena | undefined {
    try {
      return new SimdArena(new WebAssembly.Instance(new WebAssembly.Module(moduleBytes())));
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
    const f = this.fns[`${dtype}/${op}`];
    const n = slots[0].byteLength;
    const vecBytes = n - (n % 16);
    const dst = slots[0].byteOffset;
    for (let k = 1; k < slots.length; k++) {
      f(dst, slots[k].byteOffset, dst + vecBytes);
      if (vecBytes < n) tail(dtype, op, slots[0], slots[k], vecBytes / elemBytes);
    }
  }
}

/** The last few elements that do not fill a 16-byte vector. */
function tail(dtype: CommDType, op: ReduceOp, dst: Uint8Array, src: Uint8Array, from: number): void {
  const C = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array }[dtype as 'float32']!;
  const d = new C(dst.buffer, dst.byteOffset, dst.byteLength / C.BYTES_PER_ELEMENT);
  const s = new C(src.buffer, src.byteOffset, src.byteLength / C.BYTES_PER_ELEMENT);
  for (let i = from; i < d.length; i++) {
    const x = d[i], y = s[i];
    d[i] = op === 'sum' ? x + y : op === 'max' ? (x > y || x !== x ? x : y) : (x < y || x !== x ? x : y);
  }
}
