// Float views of checkpoint tensors: quantization math runs in float32 whatever the checkpoint dtype.

import type { Tensor } from '../core/tensor.js';
import { f16BitsToFloat as halfToFloat } from '../core/half.js';

export function toFloat32(t: Tensor, name = 'tensor'): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const bytes = t.data;
  switch (t.dtype) {
    case 'float32': {
      if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n).slice();
      return new Float32Array(bytes.slice().buffer, 0, n);
    }
    case 'bfloat16': {
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
      return out;
    }
    case 'float16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(bytes[2 * i] | (bytes[2 * i + 1] << 8));
      return out;
    }
    default:
      throw new Error(`${name}: cannot quantize a ${t.dtype} tensor (expected float32, float16 or bfloat16)`);
  }
}

export function f32Tensor(values: Float32Array, shape: number[]): Tensor {
  return { dtype: 'float32', shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

export function scalarF32(v: number): Tensor {
  return f32Tensor(Float32Array.of(v), []);
}

export function bytesTensor(dtype: Tensor['dtype'], shape: number[], a: ArrayBufferView): Tensor {
  return { dtype, shape, data: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) };
}
