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

/**
 * Bytes and runs of bytes, in order, as one array. Array.prototype.concat copies packed arrays in one
 * builtin, where spreading (`[...a, ...b]`) walks the iterator protocol per byte: in a fresh process,
 * whose code is still interpreted, spreading a module's few thousand bytes through nested helpers took
 * 4-5 ms of its first allReduce (src/rank/simd.ts, ./oneshot-wasm.ts); this takes a tenth of that.
 */
export const cat = (...parts: (number | readonly number[])[]): number[] => ([] as number[]).concat(...(parts as number[][]));

export const vec = (items: readonly (readonly number[])[]): number[] => cat(leb(items.length), ...items);
export const str = (s: string): number[] => cat(leb(s.length), Array.from(Buffer.from(s)));
export const section = (id: number, body: readonly number[]): number[] => cat(id, leb(body.length), body);
