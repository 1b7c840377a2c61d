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
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec([[0x60, 3, 0x7f, 0x7f, 0x7f, 0]])),
    ...section(3, vec(NAMES.map(() => [0]))),
    ...section(5, vec([[0x00, 1]])),
    ...section(7, vec([...NAMES.map((n, i) => [...str(n), 0x00, ...leb(i)]), [...str('mem'), 0x02, 0]])),
    ...section(10, vec(NAMES.map((n) => body(OPS[n])))),
  ]);
}

type Fn = (dst: number, src: number, end: number) => void;

export class SimdArena {
  readonly mem: WebAssembly.Memory;
  private fns: Record<string, Fn>;

  private constructor(inst: WebAssembly.Instance) {
    this.mem = inst.exports.mem as WebAssembly.Memory;
    this.fns = inst.exports as unknown as Record<string, Fn>;
  }

  static create(): SimdArena | undefined {
    try {
      return new SimdArena(new WebAssembly.Instance(new WebAssembly.Module(moduleBytes())));
    } catch {
      return undefined; // no wasm SIMD in this runtime: callers reduce in JavaScript
    }
  }

  static supports(dtype: CommDType, op: ReduceOp): boolean {
    return `${dtype}/${op}` in OPS;
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
