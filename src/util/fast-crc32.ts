// CRC-32 (the IEEE polynomial of zlib, gzip and the engine manifest: checksum.ts) at memory speed where
// the machine has libdeflate (libdeflate.so.0, a dependency of libtiff and most image stacks; loaded
// through the optional koffi, src/util/libc.ts): its libdeflate_crc32 folds 64 bytes at a time with
// carry-less multiplies (PCLMULQDQ/VPCLMULQDQ; libdeflate lib/x86/crc32_impl.h). Node 20's bundled zlib
// is built without Chromium's SIMD CRC (no crc32_simd symbol in the binary), so node:zlib's crc32 runs
// the table-driven loop: on the 2-core machine 1.5-3 GB/s against libdeflate's 8.4 GB/s, and 16 % of
// the CPU of `build --model` (perf; issue #14). Same polynomial and chaining, so the values are
// node:zlib's to the bit (a test compares them). Where koffi or the library is missing, or with
// TPRUN_FAST_CRC=0, node:zlib's crc32 is used.

import { crc32 as zlibCrc32 } from 'node:zlib';
import { loadKoffi } from './libc.js';
import { onOff } from './env.js';

type Crc = (crc: number, buf: Uint8Array, len: number) => number;

let fast: Crc | null | undefined;
/** Read at load, so that a misspelt TPRUN_FAST_CRC is refused where the command starts, not in a worker's first write. */
const wanted = onOff('TPRUN_FAST_CRC');

/** Below this many bytes a call through the FFI costs more than the table loop: zlib's takes them. */
export const FAST_MIN = 4096;

function load(): Crc | null {
  if (fast !== undefined) return fast;
  fast = null;
  if (!wanted) return fast;
  const koffi = loadKoffi();
  if (!koffi) return fast;
  try {
    const f = koffi.load('libdeflate.so.0').func('uint32_t libdeflate_crc32(uint32_t crc, const void *buf, size_t len)') as Crc;
    // Proven on a known value before use (zlib's check value of "123456789").
    const check = new TextEncoder().encode('123456789');
    if (f(0, check, check.length) >>> 0 === 0xcbf43926) fast = f;
  } catch {
    fast = null;
  }
  return fast;
}

/** Which implementation crc32 uses in this thread (tests check the fast one is taken where it can be). */
export function crc32Impl(): 'libdeflate' | 'zlib' {
  return load() ? 'libdeflate' : 'zlib';
}

/**
 * Below this a thread that has not loaded libdeflate yet does not load it: loading koffi and the library
 * costs 40-85 ms of CPU on the shared 2-core machine, where zlib's loop takes ~0.5 ms per MiB. The
 * parallel weight writer's main thread checksums only the segment graphs and the padding (tens of KiB):
 * it no longer loads koffi for them (issue #14); its workers, which checksum the weights, do.
 */
export const LOAD_MIN = 1 << 20;

/** Buffers of this thread checksummed by libdeflate, and those of FAST_MIN bytes or more by zlib (the
 *  weight writer's trace says which ran and from what size zlib took every buffer: weight-file.ts). */
export const crcStats = { fast: 0, zlibFrom: 0 };

/** CRC-32 of `buf` continuing from `crc` (0 to start), as node:zlib's crc32(buf, crc). */
export function crc32(buf: Uint8Array, crc = 0): number {
  const f = buf.length >= FAST_MIN && (fast !== undefined || buf.length >= LOAD_MIN) ? load() : null;
  if (f) {
    crcStats.fast++;
    return f(crc >>> 0, buf, buf.length) >>> 0;
  }
  if (buf.length >= FAST_MIN) crcStats.zlibFrom++;
  return zlibCrc32(buf, crc);
}
