// Float conversions between checkpoint dtypes (bf16/fp16/fp32 bytes) and engine dtypes.
// Node 20 has no Float16Array, so half precision is converted by bit manipulation (round to nearest even).

import type { Tensor } from '../core/tensor.js';

import { f16BitsToFloat as halfToFloat, floatToHalf } from '../core/half.js';

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
