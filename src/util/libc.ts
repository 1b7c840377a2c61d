// libc functions that Node has no binding for, through koffi (https://koffi.dev), the prebuilt FFI in
// tprun's optionalDependencies: an install may lack it (--omit=optional, no prebuilt binary for the
// platform), and then everything here is undefined. Loaded once per thread,
// at the first use; each group of functions is undefined where koffi, libc.so.6 or one of its functions
// cannot be had, and its caller takes its pure-JavaScript path (the callers' own switches, such as
// TPRUN_KERNEL_COPY=0 and TPRUN_SHM_MMAP=0, stay with them).

import { createRequire } from 'node:module';

/** What we use of koffi: a C function from its prototype, a pointer's address, an ArrayBuffer over
 *  memory at a pointer, and the errno of this thread's last call. */
export interface Koffi {
  load(path: string): { func(proto: string): unknown };
  address(p: unknown): bigint;
  view(p: unknown, len: number): ArrayBuffer;
  errno(): number;
}

type Fn = (...a: unknown[]) => unknown;

/** Memory mapping for the shared-memory allReduce (src/rank/shm-allreduce.ts). */
export interface LibcMemory {
  koffi: Koffi;
  mmap: Fn;
  munmap: Fn;
  memmove: Fn;
  schedYield: () => unknown;
}

/** copy_file_range(2) for copies inside the kernel (src/checkpoint/kernel-copy.ts); offsets in and out as one-element arrays. */
export type CopyFileRange = (fdIn: number, offIn: number[], fdOut: number, offOut: number[], len: number, flags: number) => number | bigint;

let lib: { koffi: Koffi; libc: { func(proto: string): unknown } } | null | undefined;

/** koffi itself (undefined where it cannot be had): for other shared libraries than libc (fast-crc32.ts). */
export function loadKoffi(): Koffi | undefined {
  return open()?.koffi;
}

function open(): typeof lib {
  if (lib !== undefined) return lib;
  lib = null;
  if (process.platform !== 'linux') return lib;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as Koffi;
    lib = { koffi, libc: koffi.load('libc.so.6') };
  } catch {
    lib = null;
  }
  return lib;
}

/** The functions of one caller, declared together: all of them, or undefined. */
function declare<T>(make: (l: NonNullable<typeof lib>) => T): () => T | undefined {
  let done: T | null | undefined;
  return () => {
    if (done !== undefined) return done ?? undefined;
    done = null;
    const l = open();
    if (!l) return undefined;
    try {
      done = make(l);
    } catch {
      done = null;
    }
    return done ?? undefined;
  };
}

/** mmap(2)'s protections and flags (asm-generic/mman-common.h and mman.h: Linux's on x86-64 and arm64). */
export const PROT_READ = 1, PROT_RW = 3;
export const MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_POPULATE = 0x8000;

export const libcMemory = declare<LibcMemory>(({ koffi, libc }) => ({
  koffi,
  mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as Fn,
  munmap: libc.func('int munmap(void *addr, size_t len)') as Fn,
  memmove: libc.func('void *memmove(void *dst, void *src, size_t n)') as Fn,
  schedYield: libc.func('int sched_yield()') as () => unknown,
}));

/** syscall(2), variadic: the futex calls of the shared-memory allReduce's doorbell, which libc does not wrap. */
export const libcSyscall = declare(({ libc }) => libc.func('long syscall(long nr, ...)') as Fn);

/** posix_fallocate(3): a file's blocks (tmpfs pages) allocated without writing them from JavaScript; returns
 *  0 or the error number (ENOSPC where there is no room). */
export const libcFallocate = declare(({ libc }) => libc.func('int posix_fallocate(int fd, int64_t off, int64_t len)') as (fd: number, off: number, len: number) => number);

export const libcCopyFileRange = declare(({ koffi, libc }) => ({
  copyFileRange: libc.func('intptr_t copy_file_range(int fd_in, _Inout_ int64_t *off_in, int fd_out, _Inout_ int64_t *off_out, size_t len, unsigned int flags)') as CopyFileRange,
  errno: () => koffi.errno(),
}));

/** pwritev(2) from C addresses (an iovec array of address/length pairs), for writes from a mapping
 *  without an ArrayBuffer over it (src/checkpoint/mapped-cols.ts); errno of a failed call. */
export const libcPwritev = declare(({ koffi, libc }) => ({
  pwritev: libc.func('intptr_t pwritev(int fd, const void *iov, int iovcnt, int64_t offset)') as (fd: number, iov: BigUint64Array, n: number, off: number) => number | bigint,
  errno: () => koffi.errno(),
}));
