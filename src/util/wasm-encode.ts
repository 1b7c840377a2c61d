// WebAssembly binary encoding helpers for the hand-assembled SIMD modules (src/rank/simd.ts,
// src/engine/half-simd.ts): there is no WAT toolchain at run time for a few loops.
// Encodings: WebAssembly core spec §5.1–5.5.

/** Unsigned LEB128. */
export const leb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};

/** Signed LEB128 (i32.const immediates). */
export const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && (b & 0x40))) { out.push(b); return out; }
    out.push(b | 0x80);
  }
};

export const vec = (items: number[][]): number[] => [...leb(items.length), ...items.flat()];
export const str = (s: string): number[] => [...leb(s.length), ...Buffer.from(s)];
export const section = (id: number, body: number[]): number[] => [id, ...leb(body.length), ...body];
