// Element types: sizes and exact conversions between the float formats. The file formats' names for them
// (safetensors codes, torch storage classes) live with those formats in src/checkpoint/.
import type { DType, Tensor } from './tensor.js';
import { InputError } from './errors.js';
import { f16BitsToFloat, f32BitsToF16Bits, f32BitsToBf16Bits } from './half.js';

export const ITEMSIZE: Record<DType, number> = {
  float64: 8, float32: 4, float16: 2, bfloat16: 2, float8_e4m3fn: 1,
  int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(['float32', 'float16', 'bfloat16']);

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function byteSize(dtype: DType, shape: readonly number[]): number {
  return numel(shape) * ITEMSIZE[dtype];
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// ---- tensor conversions ----------------------------------------------------------------------------

export interface CastOptions {
  /** Clamp values beyond the target's finite range instead of failing. */
  clamp?: boolean;
  /** For error messages. */
  what?: string;
  /** Index of this tensor's first element in the whole tensor (when converting a chunk). */
  indexBase?: number;
}

function f32Words(t: Tensor): Uint32Array {
  const n = numel(t.shape);
  const out = new Uint32Array(n);
  const src = t.data;
  if (t.dtype === 'float32') {
    new Uint8Array(out.buffer).set(src.subarray(0, n * 4));
  } else if (t.dtype === 'bfloat16') {
    const h = new Uint16Array(src.buffer, src.byteOffset, n);
    for (let i = 0; i < n; i++) out[i] = h[i] << 16;
  } else if (t.dtype === 'float16') {
    const h = new Uint16Array(src.buffer, src.byteOffset, n);
    const f = new Float32Array(out.buffer);
    for (let i = 0; i < n; i++) f[i] = f16BitsToFloat(h[i]);
  } else {
    throw new InputError(`${castWhat(t)}: cannot convert ${t.dtype} to a float type`);
  }
  return out;
}

function castWhat(t: Tensor, o?: CastOptions): string {
  return o?.what ?? `tensor of shape [${t.shape.join(', ')}]`;
}

// Between the two 16-bit formats a table of every source pattern replaces the float32 round trip (one
// lookup per element). bf16 -> fp16 entries are f32BitsToF16Bits of the exact float32 bits, -1 where the
// value overflows float16 (then the tensor takes the general path, which reports or clamps it);
// fp16 -> bf16 entries are made by the general path itself.
let bf16ToF16: Int32Array | undefined;
let f16ToBf16: Uint16Array | undefined;

function halfTable(from: DType, to: DType): Int32Array | Uint16Array | undefined {
  if (from === 'bfloat16' && to === 'float16') {
    if (!bf16ToF16) {
      bf16ToF16 = new Int32Array(65536);
      for (let i = 0; i < 65536; i++) bf16ToF16[i] = f32BitsToF16Bits((i << 16) >>> 0);
    }
    return bf16ToF16;
  }
  if (from === 'float16' && to === 'bfloat16') {
    if (!f16ToBf16) {
      const all = new Uint16Array(65536).map((_, i) => i);
      const c = castGeneral({ dtype: 'float16', shape: [65536], data: new Uint8Array(all.buffer) }, 'bfloat16', {});
      f16ToBf16 = new Uint16Array(c.data.buffer, c.data.byteOffset, 65536).slice();
    }
    return f16ToBf16;
  }
  return undefined;
}

/** 16-bit -> 16-bit through a table; false (nothing usable written) when an element needs the general path. */
function castByTable(src: Uint16Array, out: Uint16Array, tab: Int32Array | Uint16Array): boolean {
  for (let i = 0; i < src.length; i++) {
    const h = tab[src[i]];
    if (h < 0) return false;
    out[i] = h;
  }
  return true;
}

/** Converts float tensors; bf16/fp16 -> fp32 are exact, narrowing rounds to nearest even. */
export function castTensor(t: Tensor, to: DType, opts: CastOptions = {}): Tensor {
  if (t.dtype === to) return t;
  if (!FLOAT_DTYPES.has(to)) throw new InputError(`${castWhat(t, opts)}: cannot convert to ${to}`);
  const tab = halfTable(t.dtype, to);
  if (tab) {
    const n = numel(t.shape);
    const data = t.data.byteOffset % 2 === 0 ? t.data : t.data.slice();
    const out = new Uint16Array(n);
    if (castByTable(new Uint16Array(data.buffer, data.byteOffset, n), out, tab)) return { dtype: to, shape: t.shape, data: new Uint8Array(out.buffer) };
  }
  return castGeneral(t, to, opts);
}

function castGeneral(t: Tensor, to: DType, opts: CastOptions): Tensor {
  if (!FLOAT_DTYPES.has(to)) throw new InputError(`${castWhat(t, opts)}: cannot convert to ${to}`);
  // Uint16Array views need 2-byte alignment; copy odd-offset buffers first.
  const src = t.data.byteOffset % 4 === 0 ? t.data : t.data.slice();
  const words = f32Words({ ...t, data: src });
  const n = words.length;
  if (to === 'float32') return { dtype: to, shape: t.shape, data: new Uint8Array(words.buffer) };
  const out = new Uint16Array(n);
  if (to === 'bfloat16') {
    for (let i = 0; i < n; i++) out[i] = f32BitsToBf16Bits(words[i]);
  } else {
    for (let i = 0; i < n; i++) {
      const h = f32BitsToF16Bits(words[i]);
      if (h >= 0) { out[i] = h; continue; }
      if (!opts.clamp) {
        f32[0] = 0; u32[0] = words[i];
        throw new InputError(`${castWhat(t, opts)}: value ${f32[0]} at index ${i + (opts.indexBase ?? 0)} is beyond float16's range ` +
          `(±65504); use --clamp to saturate`);
      }
      out[i] = (words[i] & 0x80000000 ? 0x8000 : 0) | 0x7bff;
    }
  }
  return { dtype: to, shape: t.shape, data: new Uint8Array(out.buffer) };
}

/** Float values of a tensor (for tests and quantization): exact for bf16/fp16/fp32. */
export function toFloat32(t: Tensor): Float32Array {
  const c = castTensor(t, 'float32');
  return new Float32Array(c.data.buffer, c.data.byteOffset, numel(c.shape));
}
