// Scalar float16 / bfloat16 bit conversions, round to nearest even. Node 20 has no Float16Array, so every
// layer that touches half precision (checkpoints, engines, quantization, collectives) uses these.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function floatToF32Bits(v: number): number {
  f32[0] = v;
  return u32[0];
}

/** fp16 bits -> float (exact). */
export function f16BitsToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1024 + m) * 2 ** (e - 25);
}

/**
 * float32 bits -> fp16 bits, round to nearest even. Returns -1 when a finite input overflows fp16
 * (the caller decides between error, clamp and infinity).
 */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const man = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 | (man >>> 13) : 0); // inf / nan (quiet)
  const e = exp - 127 + 15;
  if (e >= 31) return -1;
  if (e <= 0) {
    // Subnormal half (or zero): shift the full mantissa (with hidden bit) right, rounding to nearest even.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const full = man | 0x800000;
    const shift = 14 - e; // 24-bit significand down to the subnormal's 10 bits
    let half = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half; // a carry into bit 10 correctly yields the smallest normal
  }
  let half = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  if (half >= 0x7c00) return -1; // rounded up into infinity
  return sign | half;
}

/** float -> fp16 bits as IEEE arithmetic would: overflow becomes infinity. */
export function floatToHalf(v: number): number {
  const x = floatToF32Bits(v);
  const h = f32BitsToF16Bits(x);
  return h < 0 ? ((x >>> 16) & 0x8000) | 0x7c00 : h;
}

/** float32 bits -> bf16 bits, round to nearest even (NaN stays NaN). */
export function f32BitsToBf16Bits(x: number): number {
  if (((x >>> 23) & 0xff) === 0xff && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}
