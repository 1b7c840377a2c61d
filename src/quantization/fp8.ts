// float8 e4m3fn (the OCP "FN" variant ONNX and TensorRT-LLM use): 1 sign, 4 exponent (bias 7), 3 mantissa
// bits, no infinities, a single NaN pattern per sign (S.1111.111), largest finite 448.

export const FP8_E4M3_MAX = 448;

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);

/** floor(log2(x)) for finite x > 0, exact (read from the float64 exponent, no log2 rounding). */
function floorLog2(x: number): number {
  f64[0] = x;
  const e = (u32[1] >>> 20) & 0x7ff;
  if (e !== 0) return e - 1023;
  return Math.floor(Math.log2(x)); // float64 subnormal: far below fp8's range, precision irrelevant
}

/** Round half to even, as IEEE conversions and ONNX QuantizeLinear do. */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Encodes one value with round-to-nearest-even. Saturating (ONNX `saturate=1`, TensorRT-LLM): finite values
 * beyond ±448 become ±448; without saturation they become NaN (e4m3fn has no infinity). NaN → 0x7f.
 */
export function encodeE4M3(x: number, saturate = true): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  let a = Math.abs(x);
  if (a > FP8_E4M3_MAX) {
    if (!saturate && a > 464) return sign | 0x7f; // ties at 464 go to even 448
    a = Math.min(a, FP8_E4M3_MAX);
  }
  if (a === 0) return sign;
  // Normals and subnormals share one formula: below 2^-6 the step stays 2^-9, and a mantissa that rounds
  // up to the next power of two carries into the exponent field by plain addition.
  const e = Math.max(floorLog2(a), -6);
  const q = roundHalfEven(a / 2 ** (e - 3));
  return sign | (((e + 6) << 3) + q);
}

export function decodeE4M3(code: number): number {
  const s = code & 0x80 ? -1 : 1;
  const E = (code >> 3) & 0xf;
  const m = code & 7;
  if (E === 15 && m === 7) return NaN;
  if (E === 0) return s * m * 2 ** -9;
  return s * (1 + m / 8) * 2 ** (E - 7);
}

const DECODE_TABLE = Float32Array.from({ length: 256 }, (_, c) => decodeE4M3(c));

export interface Fp8Tensor {
  codes: Uint8Array;
  /** Per-tensor scale: value ≈ decode(code) * scale. */
  scale: number;
}

/** Per-tensor FP8: scale = absmax / 448 (float32), codes = e4m3(x / scale) computed in float32 as ORT does. */
export function quantizeFp8(x: Float32Array, scale?: number): Fp8Tensor {
  let amax = 0;
  if (scale === undefined) {
    for (let i = 0; i < x.length; i++) amax = Math.max(amax, Math.abs(x[i]));
    scale = Math.fround(amax > 0 ? amax / FP8_E4M3_MAX : 1);
  }
  const codes = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) codes[i] = encodeE4M3(Math.fround(x[i] / scale));
  return { codes, scale };
}

export function dequantizeFp8(codes: Uint8Array, scale: number): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = DECODE_TABLE[codes[i]] * scale;
  return out;
}
