// libc functions that Node has no binding for, through koffi (https://koffi.dev), the prebuilt FFI in
// tprun's optionalDependencies: an install may lack it (--omit=optional, no prebuilt binary for the
// platform), and then everything here is undefined. Loaded once per thread,
// at the first use; each group of functions is undefined where koffi, libc.so.6 or one of its functions
// cannot be had, and its caller takes its pure-JavaScript path (the callers' own switches, such as
// TPRUN_KERNEL_COPY=0 and TPRUN_SHM_MMAP=0, stay with them).

import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

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
  const req = createRequire(import.meta.url);
  try {
    const koffi = (prebuilt(req) ?? req('koffi')) as Koffi;
    lib = { koffi, libc: koffi.load('libc.so.6') };
  } catch {
    lib = null;
  }
  return lib;
}

/**
 * koffi's prebuilt binary for this platform (glibc's build), loaded as koffi's own loader loads it
 * (koffi/src/init.js, loadStatic: the @koromix/koffi-<platform>-<arch> package beside koffi, whose
 * index.js picks its glibc or musl build) but without the loader's JavaScript, and found where Node's
 * lookup would find it (the same node_modules folders, require.resolve.paths) without its package
 * resolution: require('koffi') took 11-13 ms of CPU in a rank, resolving 'koffi' alone 3.6-7, this ≈ 2.5
 * (the dlopen ≈ 2), and every rank of a world on one machine loads it when the world starts (issue #14).
 * The binary must be the version of the koffi beside it (as koffi's wrapNative checks); anything else
 * (another layout, a musl system, a failed dlopen) is undefined, and the caller takes require('koffi'),
 * which says what is wrong where it is.
 */
function prebuilt(req: NodeJS.Require): unknown {
  if (process.arch !== 'x64' && process.arch !== 'arm64') return undefined;
  try {
    const bin = `@koromix/koffi-linux-${process.arch}/linux_${process.arch}/koffi.node`;
    for (const dir of req.resolve.paths('koffi') ?? []) {
      const koffi = join(dir, 'koffi');
      if (!existsSync(join(koffi, 'package.json'))) continue;
      // Hoisted beside koffi, or nested in it (npm's two layouts).
      const file = [join(dir, bin), join(koffi, 'node_modules', bin)].find((f) => existsSync(f));
      if (!file) return undefined;
      const m = { exports: {} as { version?: string; load?: unknown } };
      process.dlopen(m, file);
      const version = (JSON.parse(readFileSync(join(koffi, 'package.json'), 'utf8')) as { version?: string }).version;
      return m.exports.version === version && typeof m.exports.load === 'function' ? m.exports : undefined;
    }
  } catch {
    // the caller's require('koffi')
  }
  return undefined;
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

/** Whether mmap(2) returned MAP_FAILED ((void *) -1, which koffi gives as -1 or all ones by how it reads
 *  the pointer) or no pointer at all: either way there is no mapping to use. */
export function mapFailed(koffi: Koffi, p: unknown): boolean {
  if (p === null) return true;
  const a = koffi.address(p);
  return a === -1n || a === 0xffffffffffffffffn || a === 0n;
}

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
