// Element sizes and the splitting of a buffer into per-rank pieces, for the algorithms in this folder.
import type { CommArray, CommDType } from '../types.js';
import { CommError } from '../inbox.js';

export const ELEM: Record<CommDType, number> = { float32: 4, float64: 8, int32: 4, uint8: 1, int8: 1, float16: 2, bfloat16: 2 };

/** Split n elements into R nearly equal chunks; chunk r is [off[r], off[r+1]). */
export function chunks(n: number, R: number): number[] {
  const off = [0];
  const base = Math.floor(n / R);
  const extra = n % R;
  for (let r = 0; r < R; r++) off.push(off[r] + base + (r < extra ? 1 : 0));
  return off;
}

export function sub<T extends CommArray>(a: T, from: number, to: number): T {
  return a.subarray(from, to) as T;
}

/** A fresh array of buf's type with n elements. */
export function alloc<T extends CommArray>(buf: T, n: number): T {
  const C = buf.constructor as unknown as { new (n: number): T };
  return new C(n);
}

export function checkRoot(r: number, size: number, what = 'rank'): void {
  if (!Number.isInteger(r) || r < 0 || r >= size) throw new CommError(`${what} ${r} is not in 0..${size - 1}`);
}

export function checkOp(op: string): void {
  if (op !== 'sum' && op !== 'max' && op !== 'min') throw new CommError(`unknown reduce op '${op}'`);
}
