// Column cuts (a row-parallel linear's [out, in / tp] slice, the vocab-parallel lm_head's...) written
// from a read-only mapping of the checkpoint: writev(2) gathers every row's run of the cut straight from
// the source's page-cache pages, so the kernel copies each byte once, as `cp`'s copy_file_range does. A
// read into a buffer and a write from it copied every byte twice, and for runs shorter than a page the
// read took the whole rows (the other ranks' columns too): on the shared 2-core machine, convert --tp 2
// of the 1.1B shape spent ~0.35 s of its ~2 CPU-s in those reads (issue #14). copy_file_range itself is
// no help here: one call per row, 2-11 KiB each. Node has no mmap: koffi (util/libc.ts), as kernel-copy.ts;
// without it, or with TPRUN_KERNEL_COPY=0 or TPRUN_MAP_COLUMNS=0, callers read and write as before.

import fs from 'node:fs';
import { constants } from 'node:os';
import { libcMemory, libcPwritev, mapFailed, MAP_POPULATE, MAP_SHARED, PROT_READ } from '../util/libc.js';
import { PAGE } from '../util/wasm-map.js';
import { ioStats, type RawRange } from './ranged.js';
import { withPath } from './outdir.js';
import { onOff } from '../util/env.js';

/** Bytes written from mappings so far, and of those by writeColumnsAsync (tests check the paths were taken). */
export const mappedColsStats = { bytes: 0, asyncBytes: 0 };

/** Whether column cuts can be written from mappings at all. */
export function mappedColumnsAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  if (!onOff('TPRUN_MAP_COLUMNS', env) || !onOff('TPRUN_KERNEL_COPY', env) || process.platform !== 'linux') return false;
  return libcMemory() !== undefined && libcPwritev() !== undefined;
}

/** Buffers per writev: Linux's IOV_MAX (UIO_MAXIOV). */
const IOV_MAX = 1024;

/** What a column cut reads: whole rows of `rowBytes` at `range`, bytes [colOff, colOff + run) of each. */
export interface ColumnCut { range: RawRange; rowBytes: number; colOff: number; run: number }

/** The bytes a cut writes: its run of every row. */
export const cutBytes = (cut: ColumnCut): number => (cut.range.len / cut.rowBytes) * cut.run;

/**
 * Writes the cut's runs, row after row, to `outFd` (the file `outFile`) from `outPos`. false when the
 * source could not be mapped (no koffi, a file shorter than the range): nothing was written, the caller
 * reads and writes. Write failures (ENOSPC...) throw, naming `outFile`.
 */
export function writeColumns(cut: ColumnCut, outFd: number, outPos: number, outFile: string): boolean {
  const m = mapCut(cut);
  if (!m) return false;
  try {
    for (const b of batches(cut, m.base, outPos)) writeAllv(m.w, outFd, b.iov, b.n, cut.run, b.pos, outFile);
    counted(cut);
  } finally {
    m.unmap();
  }
  return true;
}

/**
 * writeColumns with each pwritev on libuv's thread pool (koffi's async calls), as kernel-copy.ts's
 * copyRangeAsync: the calling thread goes on with another rank's file meanwhile. A write that fails or
 * falls short is finished synchronously, which names its errno (koffi's errno is the calling thread's).
 */
export async function writeColumnsAsync(cut: ColumnCut, outFd: number, outPos: number, outFile: string): Promise<boolean> {
  const m = mapCut(cut);
  if (!m) return false;
  try {
    const pw = m.w.pwritev as typeof m.w.pwritev & { async?: (...a: unknown[]) => void };
    for (const b of batches(cut, m.base, outPos)) {
      const want = b.n * cut.run;
      const k = typeof pw.async === 'function'
        ? await new Promise<number>((resolve, reject) => pw.async!(outFd, b.iov, b.n, b.pos, (err: unknown, r: number | bigint) => (err ? reject(err) : resolve(Number(r)))))
        : 0;
      if (k !== want) writeAllv(m.w, outFd, b.iov, b.n, cut.run, b.pos, outFile, Math.max(0, k));
    }
    counted(cut);
    mappedColsStats.asyncBytes += cutBytes(cut);
  } finally {
    m.unmap();
  }
  return true;
}

function counted(cut: ColumnCut): void {
  const bytes = cutBytes(cut);
  // As a read of these bytes would have counted them (benchmarks report bytes read per rank).
  ioStats.bytesRead += bytes;
  mappedColsStats.bytes += bytes;
}

/**
 * The cut's whole rows mapped read-only, populated (one call, not a fault per page): the C address of
 * the first run, pwritev, and the unmapping; undefined where they cannot be mapped.
 */
function mapCut(cut: ColumnCut): { base: bigint; w: NonNullable<ReturnType<typeof libcPwritev>>; unmap: () => void } | undefined {
  const { range: r, rowBytes, colOff, run } = cut;
  const lc = libcMemory();
  const w = libcPwritev();
  if (!lc || !w || r.len === 0 || r.len % rowBytes || colOff + run > rowBytes) return undefined;
  // Pages past a file's end are a bus error when touched: a short file takes the read path, which names it.
  if (fs.fstatSync(r.fd).size < r.pos + r.len) return undefined;
  const start = Math.floor(r.pos / PAGE) * PAGE;
  const lead = r.pos - start;
  const len = lead + r.len;
  let p: unknown;
  try {
    p = lc.mmap(null, len, PROT_READ, MAP_SHARED | MAP_POPULATE, r.fd, start);
  } catch {
    return undefined;
  }
  if (mapFailed(lc.koffi, p)) return undefined;
  // The iovecs point into the mapping by address: an ArrayBuffer over each mapping would count as
  // external memory to V8 and set off a major GC every few tens of MiB (~0.2 CPU-s per convert).
  return { base: lc.koffi.address(p) + BigInt(lead + colOff), w, unmap: () => lc.munmap(p, len) };
}

interface Batch { iov: BigUint64Array; n: number; pos: number }

/** The cut's runs as iovec arrays of at most IOV_MAX (one array, refilled: a batch is written before the next). */
function* batches(cut: ColumnCut, base: bigint, outPos: number): Generator<Batch> {
  const rows = cut.range.len / cut.rowBytes;
  const iov = new BigUint64Array(2 * Math.min(rows, IOV_MAX));
  for (let r0 = 0; r0 < rows; r0 += IOV_MAX) {
    const n = Math.min(IOV_MAX, rows - r0);
    for (let i = 0; i < n; i++) {
      iov[2 * i] = base + BigInt((r0 + i) * cut.rowBytes);
      iov[2 * i + 1] = BigInt(cut.run);
    }
    yield { iov, n, pos: outPos + r0 * cut.run };
  }
}

/**
 * pwritev until all `n` runs of `run` bytes are written (a regular file may take less than asked), the
 * first `written` bytes being written already (by an asynchronous call that fell short).
 */
function writeAllv(w: NonNullable<ReturnType<typeof libcPwritev>>, fd: number, iov: BigUint64Array, n: number, run: number, pos: number, file: string, written = 0): void {
  let i = 0;
  for (let k = written; ;) {
    pos += k;
    // Whole runs written, then the rest of a run written in part, as a run of its own.
    const whole = Math.floor(k / run);
    i += whole;
    const part = k - whole * run;
    if (part) {
      iov[2 * i] += BigInt(part);
      iov[2 * i + 1] -= BigInt(part);
      const rest = Number(iov[2 * i + 1]);
      // The run written in part: its rest alone, then back to whole runs.
      const m = Number(w.pwritev(fd, iov.subarray(2 * i), 1, pos));
      if (m !== rest) throw withPath(errnoError(m < 0 ? w.errno() : 0), file);
      pos += rest;
      i++;
    }
    if (i >= n) return;
    k = Number(w.pwritev(fd, i ? iov.subarray(2 * i) : iov, n - i, pos));
    if (k <= 0) throw withPath(errnoError(k < 0 ? w.errno() : 0), file);
  }
}

/** A system error like node's own (`code` by the errno's name), for withPath to name the file. */
function errnoError(errno: number): NodeJS.ErrnoException {
  const name = Object.entries(constants.errno).find(([, v]) => v === errno)?.[0];
  const e: NodeJS.ErrnoException = new Error(`pwritev failed: ${errno ? name ?? `errno ${errno}` : 'wrote nothing'}`);
  e.code = errno ? name ?? `E${errno}` : 'EIO';
  e.errno = -errno;
  e.syscall = 'pwritev';
  return e;
}
