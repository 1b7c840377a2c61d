// Float conversions between checkpoint dtypes (bf16/fp16/fp32 bytes) and engine dtypes.
// Node 20 has no Float16Array, so half precision is converted by bit manipulation (round to nearest even).

import type { Tensor } from '../checkpoint/tensor.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** A float tensor's values as float32 (exact for bf16 and fp16). */
export function toFloat32(t: Tensor): Float32Array {
  const n = t.data.length;
  switch (t.dtype) {
    case 'float32':
      return new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + n));
    case 'bfloat16': {
      const src = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + n));
      const out = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    case 'float16': {
      const src = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + n));
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    default:
      throw new Error(`expected a float tensor, got ${t.dtype}`);
  }
}

export function float32ToHalfBits(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = floatToHalf(a[i]);
  return out;
}

export function halfBitsToFloat32(a: Uint16Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = halfToFloat(a[i]);
  return out;
}

/** Encodes float32 values as a tensor of the engine dtype. */
export function fromFloat32(a: Float32Array, shape: number[], dtype: 'float32' | 'float16'): Tensor {
  const data = dtype === 'float32' ? a : float32ToHalfBits(a);
  return { dtype, shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** [rows, cols] → [cols, rows]: linears are stored as [K, N] for MatMul. */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[base + c];
  }
  return out;
}
