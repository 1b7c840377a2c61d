// Symmetric round-to-nearest weight quantizers, on [N, K] (out, in) matrices as the checkpoint holds them.
// Output layouts are the ones CONTRACTS.md fixes, which MatMulNBits reads without repacking:
// int4 = uint8 [N, K/2], low nibble = even k, stored value q + 8; int8 = int8 [N, K].

import { roundHalfEven } from './fp8.js';

export interface Int8PerChannel {
  q: Int8Array;          // [N, K]
  scale: Float32Array;   // [N]
}

export interface Int4Grouped {
  packed: Uint8Array;    // [N, K/2]
  scale: Float32Array;   // [N, K/g]
}

function checkShape(w: Float32Array, n: number, k: number): void {
  if (w.length !== n * k) throw new Error(`weight has ${w.length} values, expected ${n}x${k}`);
}

/** Per-output-channel int8, range [-127, 127] (symmetric: -128 unused so that the range is ±scale*127). */
export function quantizeInt8PerChannel(w: Float32Array, n: number, k: number): Int8PerChannel {
  checkShape(w, n, k);
  const q = new Int8Array(n * k);
  const scale = new Float32Array(n);
  for (let r = 0; r < n; r++) {
    let amax = 0;
    for (let c = 0; c < k; c++) amax = Math.max(amax, Math.abs(w[r * k + c]));
    const s = Math.fround(amax > 0 ? amax / 127 : 1);
    scale[r] = s;
    for (let c = 0; c < k; c++) q[r * k + c] = Math.max(-127, Math.min(127, roundHalfEven(w[r * k + c] / s)));
  }
  return { q, scale };
}

/**
 * Int8 in blocks of `bs` consecutive inputs of one output row, stored as MatMulNBits' 8-bit layout takes
 * it: unsigned, q + 128 (its default zero point). One scale per block, amax / 127, as ggml's
 * quantize_row_q8_0_ref (ggml-quants.c); an all-zero block (vocab padding rows) gets scale 1.
 */
export function quantizeInt8Blocks(w: Float32Array, n: number, k: number, bs: number): { q: Uint8Array; scale: Float32Array } {
  checkShape(w, n, k);
  if (k % bs !== 0) throw new Error(`K=${k} is not a multiple of the block size ${bs}`);
  const nb = k / bs;
  const q = new Uint8Array(n * k);
  const scale = new Float32Array(n * nb);
  for (let b = 0; b < n * nb; b++) {
    const base = b * bs;
    let amax = 0;
    for (let c = 0; c < bs; c++) amax = Math.max(amax, Math.abs(w[base + c]));
    const s = Math.fround(amax > 0 ? amax / 127 : 1);
    scale[b] = s;
    for (let c = 0; c < bs; c++) q[base + c] = Math.max(-127, Math.min(127, roundHalfEven(w[base + c] / s))) + 128;
  }
  return { q, scale };
}

export function dequantizeInt8PerChannel(t: Int8PerChannel, n: number, k: number): Float32Array {
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) out[r * k + c] = t.q[r * k + c] * t.scale[r];
  return out;
}

/**
 * Group-wise int4 over K (groups of g consecutive inputs of one output row), range [-8, 7] with
 * scale = absmax/7 — RTN; `clip` (per group, ≤ 1) shrinks the range, as AWQ's clipping search does.
 */
export function quantizeInt4Grouped(w: Float32Array, n: number, k: number, g: number, clip?: Float32Array, store?: (scales: Float32Array) => Float32Array): Int4Grouped {
  checkShape(w, n, k);
  if (k % g !== 0) throw new Error(`K=${k} is not a multiple of the group size ${g}`);
  if (k % 2 !== 0) throw new Error(`K=${k} is odd; int4 packing needs pairs`);
  const ng = k / g;
  const packed = new Uint8Array((n * k) / 2);
  let scale = new Float32Array(n * ng);
  for (let r = 0; r < n; r++) {
    for (let gi = 0; gi < ng; gi++) {
      const base = r * k + gi * g;
      let amax = 0;
      for (let c = 0; c < g; c++) amax = Math.max(amax, Math.abs(w[base + c]));
      if (clip) amax *= clip[r * ng + gi];
      scale[r * ng + gi] = Math.fround(amax > 0 ? amax / 7 : 1);
    }
  }
  // `store`: the values the scales take where they are used (TensorRT-LLM casts them to the model dtype
  // at load); the weights are then rounded against exactly those.
  if (store) scale = Float32Array.from(store(scale), (v) => (v > 0 ? v : 1));
  for (let r = 0; r < n; r++) {
    for (let gi = 0; gi < ng; gi++) {
      const base = r * k + gi * g;
      const s = scale[r * ng + gi];
      for (let c = 0; c < g; c++) {
        const v = Math.max(-8, Math.min(7, roundHalfEven(w[base + c] / s))) + 8;
        const idx = base + c;
        packed[idx >> 1] |= idx & 1 ? v << 4 : v;
      }
    }
  }
  return { packed, scale };
}

export function dequantizeInt4Grouped(t: Int4Grouped, n: number, k: number, g: number): Float32Array {
  const ng = k / g;
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const idx = r * k + c;
      const b = t.packed[idx >> 1];
      const v = (idx & 1 ? b >> 4 : b & 15) - 8;
      out[idx] = v * t.scale[r * ng + ((c / g) | 0)];
    }
  }
  return out;
}

/** Unpacks the int4 layout to signed values (tests, and engines that cannot take packed weights). */
export function unpackInt4(packed: Uint8Array, count: number): Int8Array {
  const out = new Int8Array(count);
  for (let i = 0; i < count; i++) out[i] = (i & 1 ? packed[i >> 1] >> 4 : packed[i >> 1] & 15) - 8;
  return out;
}
