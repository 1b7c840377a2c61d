// Writing a buffer whole at a file offset, in pieces: the one loop the weight file's writers share (the
// streaming writer's chunks, weight-file.ts; the parallel writer's main thread, weight-jobs.ts, and its
// workers, weight-worker.ts). Positional writes, so writers that finish out of order still put every
// byte at its place. Not stores into a mapping of the output file (MAP_SHARED after ftruncate), which
// would spare the write's copy but not the page cache's: each new page then faults and is zeroed before
// it is filled (1.98 GB from a mapped source on the 2-core machine: 1.1-1.2 CPU-s mapped, with or
// without MAP_POPULATE, against 0.62 in 512 KiB pwrites; issue #14).

import { writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/**
 * Bytes per write: the kernel's copy into the page cache costs far more per byte in large writes (a
 * plain read/write loop of the 1.1B shape on the 2-core machine: 2.6-3.2 s of kernel time with 16 MiB
 * writes, 1.7-2.1 with 512 KiB writes of the same buffer; issue #14).
 */
export const WRITE_PIECE = 512 << 10;

/** Writes all of `view` from file offset `at` (a short write is continued where it stopped). */
export async function writeAt(fh: FileHandle, view: Uint8Array, at: number): Promise<void> {
  for (let done = 0; done < view.length;) done += (await fh.write(view, done, Math.min(WRITE_PIECE, view.length - done), at + done)).bytesWritten;
}

/** writeAt on a descriptor, blocking (worker threads, whose whole job is the write). */
export function writeAtSync(fd: number, view: Uint8Array, at: number): void {
  for (let done = 0; done < view.length;) done += writeSync(fd, view, done, Math.min(WRITE_PIECE, view.length - done), at + done);
}
