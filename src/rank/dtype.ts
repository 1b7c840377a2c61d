// Element types and reductions for collectives. Half-precision types travel as Uint16Array bit patterns
// and are reduced in float32, rounded back to nearest-even once per reduction.
import type { CommArray, CommDType, ReduceOp } from './types.js';
import { f16BitsToFloat, f32BitsToBf16Bits, floatToF32Bits, floatToHalf } from '../core/half.js';

export function dtypeOf(buf: CommArray, given?: CommDType): CommDType {
  const natural: CommDType | undefined =
    buf instanceof Float32Array ? 'float32' : buf instanceof Float64Array ? 'float64' : buf instanceof Int32Array ? 'int32'
      : buf instanceof Int8Array ? 'int8' : buf instanceof Uint8Array ? 'uint8' : undefined;
  if (buf instanceof Uint16Array) {
    if (given !== 'float16' && given !== 'bfloat16') throw new TypeError("a Uint16Array needs { dtype: 'float16' | 'bfloat16' }");
    return given;
  }
  if (!natural) throw new TypeError(`unsupported array type ${(buf as object)?.constructor?.name}`);
  if (given && given !== natural) throw new TypeError(`dtype '${given}' does not match a ${buf.constructor.name}`);
  return natural;
}

export const bytesOf = (a: CommArray): Uint8Array =>
  a instanceof Uint8Array && a.constructor === Uint8Array ? a : new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A view of the same type over other bytes (which must be suitably aligned; fresh buffers are). */
export function like<T extends CommArray>(proto: T, bytes: Uint8Array): T {
  const C = proto.constructor as unknown as { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number };
  if (bytes.byteOffset % C.BYTES_PER_ELEMENT === 0) return new C(bytes.buffer, bytes.byteOffset, bytes.byteLength / C.BYTES_PER_ELEMENT);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new C(copy.buffer, 0, bytes.byteLength / C.BYTES_PER_ELEMENT);
}

// ---- half precision ----
let f16Table: Float32Array | undefined;
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = f16BitsToFloat(h);
  return (f16Table = t);
}
export const f32ToF16 = floatToHalf;
export const f32ToBf16 = (x: number): number => f32BitsToBf16Bits(floatToF32Bits(x));

export function toF32(src: Uint16Array, dtype: 'float16' | 'bfloat16', out = new Float32Array(src.length)): Float32Array {
  if (dtype === 'float16') {
    const t = halfTable();
    for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  } else {
    const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  }
  return out;
}

export function fromF32(src: Float32Array, dtype: 'float16' | 'bfloat16', out: Uint16Array): void {
  if (dtype === 'float16') for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  else {
    const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
    for (let i = 0; i < src.length; i++) {
      const b = u[i];
      out[i] = (b & 0x7f800000) === 0x7f800000 && b & 0x7fffff ? ((b >>> 16) | 0x40) & 0xffff : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
}

type Num = Float32Array | Float64Array | Int32Array | Int8Array | Uint8Array;
type Kernel2 = (out: Num, a: Num, b: Num, n: number) => void;

// One compiled loop per (element type, op): a loop shared by several typed-array classes goes
// megamorphic in V8 and runs ~10x slower, so each gets its own function (and its own type feedback).
const kernels = new Map<string, Kernel2>();
function kernel(out: Num, op: ReduceOp): Kernel2 {
  const key = `${out.constructor.name}/${op}`;
  let k = kernels.get(key);
  if (!k) {
    // Math.max/min: -0 below +0 and NaN winning, as WebAssembly's vector max/min (./simd.ts), so a rank
    // that reduces here and one that reduces there agree on every bit but a NaN's payload.
    const expr = op === 'sum' ? 'x + y' : op === 'max' ? 'Math.max(x, y)' : 'Math.min(x, y)';
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    k = new Function('out', 'a', 'b', 'n', `for (let i = 0; i < n; i++) { const x = a[i], y = b[i]; out[i] = ${expr}; }`) as Kernel2;
    kernels.set(key, k);
  }
  return k;
}

/** out[i] = a[i] (op) b[i] in one pass (out may be a or b). */
function combine2(out: Num, a: Num, b: Num, op: ReduceOp): void {
  kernel(out, op)(out, a, b, out.length);
}

/**
 * out = sources[0] op sources[1] op ... in that order (so every rank computing this from the same inputs
 * gets bit-identical results, a NaN's payload aside). `out` may be one of the sources.
 */
export function reduceInto(dtype: CommDType, op: ReduceOp, out: CommArray, sources: CommArray[]): void {
  if (sources.length === 1) {
    if (sources[0] !== out) out.set(sources[0] as never);
    return;
  }
  if (dtype === 'float16' || dtype === 'bfloat16') {
    const acc = toF32(sources[0] as Uint16Array, dtype);
    const tmp = new Float32Array(acc.length);
    for (let k = 1; k < sources.length; k++) combine2(acc, acc, toF32(sources[k] as Uint16Array, dtype, tmp), op);
    fromF32(acc, dtype, out as Uint16Array);
    return;
  }
  if (sources.length === 2) return combine2(out as Num, sources[0] as Num, sources[1] as Num, op);
  // Integer sums of narrow types wrap like MPI's; accumulating in the same type keeps that behaviour.
  const C = out.constructor as unknown as { new (n: number): Num };
  const acc = new C(out.length);
  combine2(acc, sources[0] as Num, sources[1] as Num, op);
  for (let k = 2; k < sources.length; k++) combine2(acc, acc, sources[k] as Num, op);
  out.set(acc as never);
}
