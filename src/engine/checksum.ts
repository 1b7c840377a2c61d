// Checksums of an engine's files, recorded in rank{r}/manifest.json to detect damage (a truncated copy,
// a flipped bit) when the engine is opened. The manifest is integrity, not identity: whoever can change
// weights.bin can rewrite manifest.json beside it, so a cryptographic hash buys nothing there, and no
// format the files follow asks for one (ONNX external data and TensorRT-LLM's engine directory carry no
// checksum at all). CRC-32 (the IEEE polynomial of zlib, gzip, zip and PNG: fast-crc32.ts computes it)
// catches every burst of up to 32 bits and all but 2^-32 of other damage, at several times sha256's speed:
// sha256 of weights.bin was the largest cost of a build (issue #14).
// Engines written before record sha256 instead; they are still verified with it.

import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { crc32 } from '../util/fast-crc32.js';

export type ChecksumAlgo = 'crc32' | 'sha256';

/** A file's entry in the manifest: its size and one checksum (crc32 written now, sha256 before). */
export interface FileSum { size: number; crc32?: string; sha256?: string }

/** CRC-32 as the manifest records it: 8 lowercase hex digits. */
export const crc32Hex = (crc: number): string => (crc >>> 0).toString(16).padStart(8, '0');

/** The manifest entry of bytes held in memory. */
export function sumOf(bytes: Uint8Array): FileSum {
  return { size: bytes.length, crc32: crc32Hex(crc32(bytes)) };
}

/** Which checksum an entry carries (crc32 preferred), or undefined when it has none. */
export function recordedAlgo(sum: FileSum): ChecksumAlgo | undefined {
  return typeof sum.crc32 === 'string' ? 'crc32' : typeof sum.sha256 === 'string' ? 'sha256' : undefined;
}

// CRC-32 of a concatenation from the CRCs of its parts (zlib's crc32_combine, crc32.c: multiplication
// by x^(8·len2) modulo the reflected polynomial), so parts of a file can be checksummed on several
// threads at once and joined in order.
const POLY = 0xedb88320;

/** a(x)·b(x) modulo the CRC polynomial, bit-reflected as zlib's multmodp. */
function multmodp(a: number, b: number): number {
  let m = 0x80000000, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** x^(2^k) modulo the polynomial, k = 0..31. */
const X2N: number[] = [];
for (let k = 0, p = 0x40000000; k < 32; k++, p = multmodp(p, p)) X2N.push(p);

/** x^(n·2^k) modulo the polynomial. */
function x2nmodp(n: number, k: number): number {
  let p = 0x80000000;
  for (; n; n = Math.floor(n / 2), k++) if (n % 2) p = multmodp(X2N[k & 31], p);
  return p;
}

/** CRC-32 of A‖B from crc(A), crc(B) and B's length in bytes. */
export function crc32Combine(crcA: number, crcB: number, lenB: number): number {
  return (multmodp(x2nmodp(lenB, 3), crcA >>> 0) ^ crcB) >>> 0;
}

const READ = 16 << 20;

/**
 * The file's checksum, read in fixed-size pieces: an engine's weights need not fit in memory a second
 * time, and the event loop (a rank's heartbeats) runs between pieces.
 */
export async function fileChecksum(path: string, algo: ChecksumAlgo): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(READ);
    const sha = algo === 'sha256' ? createHash('sha256') : undefined;
    let crc = 0;
    for (let pos = 0, n; (n = (await fh.read(buf, 0, buf.length, pos)).bytesRead) > 0; pos += n) {
      const piece = buf.subarray(0, n);
      if (sha) sha.update(piece);
      else crc = crc32(piece, crc);
    }
    return sha ? sha.digest('hex') : crc32Hex(crc);
  } finally {
    await fh.close();
  }
}
