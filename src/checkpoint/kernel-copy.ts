// Bytes copied from one file to another inside the kernel (copy_file_range(2), which `cp` uses): one
// copy of each byte where a read and a write through user space make two. Node's fs has no ranged
// copy_file_range, so it is called through koffi, the optional prebuilt FFI (src/util/libc.ts). Where
// koffi, the call or the pair of filesystems is missing (ENOSYS, EXDEV, EOPNOTSUPP, EINVAL), copyRange
// says false and callers read and write as before (TPRUN_KERNEL_COPY=0 forces that).

import { constants } from 'node:os';
import { InputError } from '../core/errors.js';
import { type CopyFileRange, libcCopyFileRange } from '../util/libc.js';
import { ioStats } from './ranged.js';
import { onOff } from '../util/env.js';

/** null without koffi, with TPRUN_KERNEL_COPY=0, or once the kernel refused a copy between these filesystems: every later copy reads and writes. */
let call: CopyFileRange | null | undefined;
let errno: () => number = () => 0;

function load(): CopyFileRange | null {
  if (call !== undefined) return call;
  call = null;
  if (!onOff('TPRUN_KERNEL_COPY')) return call;
  const c = libcCopyFileRange();
  if (c) {
    call = c.copyFileRange;
    errno = c.errno;
  }
  return call;
}

/** Whether copyRange can be tried at all. */
export function kernelCopyAvailable(): boolean {
  return load() !== null;
}

/** Bytes copied inside the kernel so far, and of those by copyRangeAsync (tests check the paths were taken). */
export const kernelCopyStats = { bytes: 0, asyncBytes: 0 };

// errno values (Linux, every architecture tprun runs on) after which the caller falls back for good.
const UNSUPPORTED = new Set([38 /* ENOSYS */, 18 /* EXDEV */, 95 /* EOPNOTSUPP */, 22 /* EINVAL */, 9 /* EBADF */]);

/**
 * The failure of a copy from `src` to `dst`: the errno by its name (ENOSPC, EIO, EFBIG, EDQUOT... from
 * os.constants.errno; else the number) and as `code`, like node's own fs errors, so withPath-style
 * handling sees a system error. Both files are named: a full disk is the output's, EIO may be either's.
 */
export function copyError(errno: number, src: string, dst: string): NodeJS.ErrnoException {
  const name = Object.entries(constants.errno).find(([, n]) => n === errno)?.[0];
  const e: NodeJS.ErrnoException = new Error(`${src} -> ${dst}: copy_file_range failed: ${name ?? `errno ${errno}`}`);
  e.code = name ?? `E${errno}`;
  e.errno = -errno;
  e.syscall = 'copy_file_range';
  return e;
}

/**
 * Copies `len` bytes at `posIn` of `fdIn` (the file `src`) to `posOut` of `fdOut` (the file `dst`).
 * false when the kernel cannot copy between these files (then none or part of the range was copied:
 * the caller writes it all again). A source that ends early is an input error of `src`.
 */
export function copyRange(fdIn: number, posIn: number, fdOut: number, posOut: number, len: number, src: string, dst: string): boolean {
  const f = load();
  if (!f) return false;
  const inOff = [posIn], outOff = [posOut];
  let done = 0;
  while (done < len) {
    const n = Number(f(fdIn, inOff, fdOut, outOff, len - done, 0));
    if (n < 0) {
      const e = errno();
      if (UNSUPPORTED.has(e)) {
        call = null;
        return false;
      }
      throw copyError(e, src, dst);
    }
    if (n === 0) throw new InputError(`${src}: truncated (wanted ${len} bytes at offset ${posIn}, file ended)`);
    done += n;
    ioStats.bytesRead += n;
  }
  kernelCopyStats.bytes += len;
  return true;
}

/** koffi's asynchronous form of a function: the call runs on libuv's thread pool, the callback here. */
type AsyncFn = { async?: (...a: unknown[]) => void };

/**
 * copyRange on libuv's thread pool (koffi's async calls): the calling thread goes on meanwhile, so
 * convert's rank files, interleaved on one thread where cores are few (convert.ts rankPipelines), are
 * copied by two threads at once as a worker thread per rank would, without starting workers. Resolves
 * false where copyRange would say false (then nothing is known to be copied: the caller writes the range
 * again). A failed call is retried here synchronously, which names its errno (koffi's errno is the
 * calling thread's, not the pool thread's).
 */
export async function copyRangeAsync(fdIn: number, posIn: number, fdOut: number, posOut: number, len: number, src: string, dst: string): Promise<boolean> {
  const f = load() as (CopyFileRange & AsyncFn) | null;
  if (!f) return false;
  if (typeof f.async !== 'function') return copyRange(fdIn, posIn, fdOut, posOut, len, src, dst);
  let done = 0;
  while (done < len) {
    const n = await new Promise<number>((resolve, reject) => {
      f.async!(fdIn, [posIn + done], fdOut, [posOut + done], len - done, 0, (err: unknown, r: number | bigint) => (err ? reject(err) : resolve(Number(r))));
    });
    // Failed or at the source's end: the rest synchronously, which names the errno or the short file, or
    // says false (then the caller writes the whole range again: positional writes of the same bytes).
    if (n <= 0) return copyRange(fdIn, posIn + done, fdOut, posOut + done, len - done, src, dst) && counted(done);
    done += n;
    ioStats.bytesRead += n;
  }
  return counted(len);
}

function counted(asyncBytes: number): true {
  kernelCopyStats.bytes += asyncBytes;
  kernelCopyStats.asyncBytes += asyncBytes;
  return true;
}
