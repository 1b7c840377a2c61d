// Ranged reads of a row-major tensor stored contiguously at some offset of an open file: only the bytes
// of the rows or columns asked for are read (pread at offsets), never the whole file.
import fs from 'node:fs';
import type { DType } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { byteSize } from '../core/dtype.js';

/** Bytes this process read from checkpoint files (benchmarks report it per rank). */
export const ioStats = { bytesRead: 0 };

/** Reads exactly `len` bytes at `pos` into `dest[destOff..]`, failing clearly on a short file. */
export function preadFully(fd: number, dest: Uint8Array, destOff: number, len: number, pos: number, file: string): void {
  let done = 0;
  while (done < len) {
    // Chunks of at most 1 GiB: a single read() is capped by the kernel near 2 GiB anyway.
    const n = fs.readSync(fd, dest, destOff + done, Math.min(len - done, 1 << 30), pos + done);
    if (n === 0) throw new InputError(`${file}: truncated (wanted ${len} bytes at offset ${pos}, file ended)`);
    done += n;
    ioStats.bytesRead += n;
  }
}

export interface StoredTensor {
  fd: number;
  /** File name and tensor name for errors. */
  file: string;
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offset of element 0 in the file. */
  offset: number;
}

function rowsOf(t: StoredTensor): number {
  return t.shape.length ? t.shape[0] : 1;
}

/** Rows [start, end) of dim 0 into dest at destOff. */
export function readRowsAt(t: StoredTensor, start: number, end: number, dest: Uint8Array, destOff: number): void {
  const rows = rowsOf(t);
  if (start < 0 || end > rows || start > end) throw new InputError(`${t.file}: tensor ${t.name}: rows [${start}, ${end}) out of range (${rows})`);
  const rb = byteSize(t.dtype, t.shape.slice(1));
  preadFully(t.fd, dest, destOff, (end - start) * rb, t.offset + start * rb, t.file);
}

/** Where bytes of a tensor lie in an open file (for copies inside the kernel: kernel-copy.ts). */
export interface RawRange { fd: number; pos: number; len: number; file: string }

/** Rows [start, end) of dim 0 as one range of the file. */
export function rawRowsAt(t: StoredTensor, start: number, end: number): RawRange {
  const rows = rowsOf(t);
  if (start < 0 || end > rows || start > end) throw new InputError(`${t.file}: tensor ${t.name}: rows [${start}, ${end}) out of range (${rows})`);
  const rb = byteSize(t.dtype, t.shape.slice(1));
  return { fd: t.fd, pos: t.offset + start * rb, len: (end - start) * rb, file: t.file };
}

/** Rows read whole for short column runs: one scratch block per process, reused (no garbage per call). */
let scratch = new Uint8Array(0);

/**
 * Columns [start, end) of dim 1, every row, as one block (into `dest` when given, which must hold
 * exactly that many bytes): one pread per row when the runs are long, blocks of whole rows when runs
 * are too short to be worth a syscall each.
 */
export function readColsAt(t: StoredTensor, start: number, end: number, rowRange?: readonly [number, number], dest?: Uint8Array): Uint8Array {
  if (t.shape.length < 2) throw new InputError(`${t.file}: tensor ${t.name}: cannot slice dim 1 of a ${t.shape.length}-D tensor`);
  const cols = t.shape[1];
  const [r0, r1] = rowRange ?? [0, t.shape[0]];
  if (r0 < 0 || r1 > t.shape[0] || r0 > r1) throw new InputError(`${t.file}: tensor ${t.name}: rows [${r0}, ${r1}) out of range (${t.shape[0]})`);
  const rows = r1 - r0;
  if (start < 0 || end > cols || start > end) throw new InputError(`${t.file}: tensor ${t.name}: columns [${start}, ${end}) out of range (${cols})`);
  const inner = byteSize(t.dtype, t.shape.slice(2));
  const rowBytes = cols * inner;
  const run = (end - start) * inner;
  if (dest && dest.length !== rows * run) throw new Error(`${t.file}: tensor ${t.name}: column block needs ${rows * run} bytes, got ${dest.length}`);
  const out = dest ?? new Uint8Array(rows * run);
  if (run === rowBytes) {
    readRowsAt(t, r0, r1, out, 0);
    return out;
  }
  const base = t.offset + r0 * rowBytes;
  // Runs shorter than a page: every page of the rows is touched anyway, so read whole blocks of rows.
  if (run >= 4096) {
    for (let r = 0; r < rows; r++) preadFully(t.fd, out, r * run, run, base + r * rowBytes + start * inner, t.file);
    return out;
  }
  const block = Math.max(1, Math.floor((8 << 20) / Math.max(1, rowBytes)));
  const need = Math.min(rows, block) * rowBytes;
  if (scratch.length < need) scratch = new Uint8Array(need);
  const buf = scratch;
  for (let b0 = 0; b0 < rows; b0 += block) {
    const n = Math.min(block, rows - b0);
    preadFully(t.fd, buf, 0, n * rowBytes, base + b0 * rowBytes, t.file);
    for (let i = 0; i < n; i++) {
      const s = i * rowBytes + start * inner;
      out.set(buf.subarray(s, s + run), (b0 + i) * run);
    }
  }
  return out;
}
