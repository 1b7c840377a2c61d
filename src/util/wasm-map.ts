// Windows of a file mapped INTO a WebAssembly memory (mmap with MAP_FIXED over the memory's own pages),
// so wasm SIMD code reads the file's page-cache pages where they are: no read() copies them into the
// memory first. The idea is src/rank/shm-allreduce.ts's wasmPlane (which maps shared-memory files read
// and write); this is the read-only kind for checkpoints. Both take a memory's C address and put its own
// pages back through memoryPointer and restorePages below.
//
// Only shared memories are mapped into: V8 reserves a shared memory's whole address range up front and
// never moves it, even when it grows (a growth only makes more of the reservation accessible), so a
// mapping stays where it was put. Each window is proven before use (a byte stored through the address
// koffi hands to C shows in the memory, and the mapped bytes are the file's), else the memory's own
// pages are put back and the caller reads the file as before. Windows are read-only (PROT_READ,
// MAP_PRIVATE): a stray store from wasm traps instead of reaching the file, and none populate copies
// (a private writable mapping populated would copy every page). release() puts anonymous zero pages back;
// where that fails (an mmap refused: ENOMEM at a mapping-count limit, say) the window may still be there,
// read-only, and a store into it would kill the process: release() says so, the caller writes nothing
// there again, and no window is mapped again in this thread (its callers read sources as without koffi).

import { readSync } from 'node:fs';
import { libcMemory, type LibcMemory, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_RW } from './libc.js';
/** The page size of every Linux tprun maps on (x86-64; arm64 kernels of 4 KiB pages). Checked: a
 *  window at an address the kernel does not take as page-aligned fails its mmap and is not used. */
export const PAGE = 4096;

const roundUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * The C address of byte `o` of `buf` (a wasm memory's buffer) as koffi hands it to C, or null. With
 * `prove`, also proven to be that memory before anything is mapped over it (MAP_FIXED replaces whatever
 * is there): a byte stored through the address shows in `buf`. Without: for a read-only window (which
 * cannot take the store) whose address was proven when it was mapped.
 */
export function memoryPointer(libc: LibcMemory, buf: ArrayBufferLike, o: number, prove = true): unknown {
  const { koffi, memmove } = libc;
  const v = new Uint8Array(buf, o, 16);
  const p = memmove(v, v, 0);
  if (p === null || !prove) return p;
  const seen = new Uint8Array(koffi.view(p, 16));
  const before = v[0];
  seen[0] = before ^ 0xa5;
  const same = v[0] === (before ^ 0xa5);
  v[0] = before;
  return same ? p : null;
}

/**
 * Anonymous private zero pages again at bytes [o, o + n) of `buf`, where a file was mapped: the memory
 * is as V8 made it, the file let go. false when the mmap failed (MAP_FAILED is (void *) -1, not NULL:
 * only the address asked for is success); the file's mapping may then still be there.
 */
export function restorePages(libc: LibcMemory, buf: ArrayBufferLike, o: number, n: number): boolean {
  try {
    const want = memoryPointer(libc, buf, o, false);
    if (want === null) return false;
    const p = libc.mmap(want, n, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    return p !== null && libc.koffi.address(p) === libc.koffi.address(want);
  } catch {
    return false;
  }
}

/** Windows mapped so far and their bytes (tests check the mapped path was taken). */
export const wasmMapStats = { windows: 0, bytes: 0 };

/** Set when a window's pages could not be put back (release): mapping is off for the rest of this thread. */
let broken = false;

export class WasmFileMap {
  /** [memory offset, length] of every window still mapped. */
  private mapped: [number, number][] = [];
  /** Start and end of the memory that a failed release left unusable (no store may go there); [0, 0] when none. */
  readonly lost: [number, number] = [0, 0];

  private constructor(private mem: WebAssembly.Memory, private libc: LibcMemory) {}

  /** undefined without koffi, or for a memory that is not shared. */
  static create(mem: WebAssembly.Memory): WasmFileMap | undefined {
    if (process.platform !== 'linux' || broken) return undefined;
    if (!(mem.buffer instanceof SharedArrayBuffer)) return undefined;
    const libc = libcMemory();
    return libc ? new WasmFileMap(mem, libc) : undefined;
  }

  /** Bytes of memory a window of `len` file bytes takes (it starts on a page and ends on one). */
  static span(len: number): number {
    return roundUp(len + PAGE, PAGE);
  }

  /**
   * Maps file bytes [pos, pos + len) of `fd` read-only into the memory from `base` (a multiple of PAGE,
   * with WasmFileMap.span(len) bytes of memory there, within its current size) and returns the offset
   * where byte `pos` now is; -1 when it could not (the memory there is as before). The window mapped
   * before, if any, is released first: one at a time.
   */
  map(base: number, fd: number, pos: number, len: number): number {
    if (base % PAGE || len <= 0 || broken) return -1;
    const lead = pos % PAGE;
    const n = roundUp(lead + len, PAGE);
    if (base + n > this.mem.buffer.byteLength) return -1;
    const { koffi, mmap } = this.libc;
    // One window at a time: the previous one's pages (read-only: the proof below stores a byte) go first.
    if (!this.release()) return -1;
    try {
      const want = memoryPointer(this.libc, this.mem.buffer, base);
      if (want === null || koffi.address(want) % BigInt(PAGE) !== 0n) return -1;
      // Listed first: a MAP_FIXED that fails may already have removed the memory's pages there.
      this.mapped.push([base, n]);
      const p = mmap(want, n, PROT_READ, MAP_PRIVATE | MAP_FIXED | MAP_POPULATE, fd, pos - lead);
      if (p === null || koffi.address(p) !== koffi.address(want) || !this.sameAsFile(base + lead, fd, pos, len)) {
        this.release();
        return -1;
      }
    } catch {
      this.release();
      return -1;
    }
    wasmMapStats.windows++;
    wasmMapStats.bytes += len;
    return base + lead;
  }

  /**
   * The window's first and last bytes are the file's (read through the file, not the mapping). A file
   * shorter than the window fails here (a short read), so its pages past the end, whose touch is a bus
   * error that kills the process, are never read: the caller's read path names the truncated file. (A
   * file cut short by someone else while its window is mapped still faults: a risk the read path has
   * not, taken for a checkpoint nobody should be rewriting under a build.)
   */
  private sameAsFile(at: number, fd: number, pos: number, len: number): boolean {
    const k = Math.min(64, len);
    const mem = new Uint8Array(this.mem.buffer);
    const buf = new Uint8Array(k);
    for (const off of [0, len - k]) {
      if (readSync(fd, buf, 0, k, pos + off) !== k) return false;
      for (let i = 0; i < k; i++) if (buf[i] !== mem[at + off + i]) return false;
    }
    return true;
  }

  /**
   * Anonymous zero pages again where windows were: the memory is as V8 made it, the files let go. false
   * when an mmap failed: that window may still be mapped read-only, so `lost` grows to cover it, nothing
   * may be stored there, and mapping is off for the rest of this thread.
   */
  release(): boolean {
    let ok = true;
    for (const [o, n] of this.mapped) {
      if (restorePages(this.libc, this.mem.buffer, o, n)) continue;
      ok = false;
      broken = true;
      this.lost[0] = this.lost[1] === 0 ? o : Math.min(this.lost[0], o);
      this.lost[1] = Math.max(this.lost[1], o + n);
    }
    this.mapped.length = 0;
    return ok;
  }
}
