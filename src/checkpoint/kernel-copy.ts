// Bytes copied from one file to another inside the kernel (copy_file_range(2), which `cp` uses): one
// copy of each byte where a read and a write through user space make two. Node's fs has no ranged
// copy_file_range, so it is called through koffi, the optional prebuilt FFI that src/rank/shm-allreduce.ts
// maps memory with. Where koffi, the call or the pair of filesystems is missing (ENOSYS, EXDEV,
// EOPNOTSUPP, EINVAL), copyRange says false and callers read and write as before (TPRUN_KERNEL_COPY=0
// forces that).

import { createRequire } from 'node:module';
import { InputError } from '../core/errors.js';
import { ioStats } from './ranged.js';

type CopyFileRange = (fdIn: number, offIn: number[], fdOut: number, offOut: number[], len: number, flags: number) => number | bigint;

let call: CopyFileRange | null | undefined;
let errno: () => number = () => 0;

function load(): CopyFileRange | null {
  if (call !== undefined) return call;
  call = null;
  if (process.platform !== 'linux' || process.env.TPRUN_KERNEL_COPY === '0') return call;
  try {
    // Optional: not a dependency of tprun's install; taken when it is there.
    const koffi = createRequire(import.meta.url)('koffi') as { load(p: string): { func(proto: string): unknown }; errno(): number };
    const libc = koffi.load('libc.so.6');
    call = libc.func('intptr_t copy_file_range(int fd_in, _Inout_ int64_t *off_in, int fd_out, _Inout_ int64_t *off_out, size_t len, unsigned int flags)') as CopyFileRange;
    errno = () => koffi.errno();
  } catch {
    call = null;
  }
  return call;
}

/** Whether copyRange can be tried at all. */
export function kernelCopyAvailable(): boolean {
  return load() !== null;
}

/** Bytes copied inside the kernel so far (tests check the path was taken). */
export const kernelCopyStats = { bytes: 0 };

// errno values (Linux, every architecture tprun runs on) after which the caller falls back for good.
const UNSUPPORTED = new Set([38 /* ENOSYS */, 18 /* EXDEV */, 95 /* EOPNOTSUPP */, 22 /* EINVAL */, 9 /* EBADF */]);

/**
 * Copies `len` bytes at `posIn` of `fdIn` to `posOut` of `fdOut`. false when the kernel cannot copy
 * between these files (then none or part of the range was copied: the caller writes it all again).
 * `what` names the source file for errors: a source that ends early is an input error of that file.
 */
export function copyRange(fdIn: number, posIn: number, fdOut: number, posOut: number, len: number, what: string): boolean {
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
      throw new Error(`${what}: copy_file_range failed (errno ${e})`);
    }
    if (n === 0) throw new InputError(`${what}: truncated (wanted ${len} bytes at offset ${posIn}, file ended)`);
    done += n;
    ioStats.bytesRead += n;
  }
  kernelCopyStats.bytes += len;
  return true;
}
