// Large allReduce between ranks that all sit on one machine, through an area of each rank's /dev/shm
// file (./shm-link.ts) instead of the message rings: a pipelined reduce-scatter + all-gather.
//
// For every step of at most `step` bytes of the buffer, rank r
//   1. writes the chunks of its input that peers own into its input area (its own chunk stays put),
//   2. reads chunk r of every peer's input area, reduces them in rank order with its own (SIMD where
//      ./simd.ts has the op), puts the result into its buffer and into its output area,
//   3. reads every peer's reduced chunk from the peer's output area straight into its buffer.
// Input and output areas are double-buffered by step parity, so a rank writes step s+1 while peers still
// read step s; a rank overwrites an area only once every peer has published that it is done with the
// step that used it two steps earlier. Publication is three counters per rank (written, reduced,
// gathered: step generations, monotonic across calls), each in its own cache line; data is written before
// its counter and read after it. Bytes moved per rank: (R-1)/R of the buffer out and in twice, the
// minimum for a reduce-scatter + all-gather, with no message headers, no ring back-pressure and no
// allocation per call. The split is that of Open MPI's ring allreduce (reduce-scatter of R blocks, then
// all-gather; ompi/mca/coll/base/coll_base_allreduce.c, ompi_coll_base_allreduce_intra_ring), with every
// peer read in one hop instead of R-1 ring steps, since all of them are in reach.
//
// Memory access comes in two planes with one layout: mapped memory (koffi's mmap, when that optional
// package loads: one copy per move at memcpy speed) or pread/pwrite on the file (pure JavaScript, the
// fallback: every move is a kernel copy). Planes may differ between ranks; the bytes are the same pages.
// On the arena plane a call of one exchange (oneShot) runs as one WebAssembly call (./oneshot-wasm.ts)
// as far as it can alone; the JavaScript below carries on from where it stops.
import { fstatSync, readSync, writeSync } from 'node:fs';
import type { CommArray, CommDType, ReduceOp } from './types.js';
import { CommError } from './inbox.js';
import { InputError } from '../core/errors.js';
import { onOff, wholeNumber } from '../util/env.js';
import { bytesOf, like, reduceInto } from './dtype.js';
import { SimdArena } from './simd.js';
import { descriptor, mismatch } from './collective-check.js';
import { ELEM } from './collectives/slices.js';
import { type LibcMemory, libcFallocate, libcMemory, libcSyscall, mapFailed, MAP_FIXED, MAP_POPULATE, MAP_SHARED, PROT_RW } from '../util/libc.js';
import { OneShot, type OneShotFn, oneShotFn } from './oneshot-wasm.js';
import { memoryPointer, PAGE, restorePages } from '../util/wasm-map.js';
import { transport } from './transport.js';
import { MAX_WARM_CALLS } from './wire-schema.js';

/** The mapping functions, and syscall(2) where the futex wait is on. */
type Libc = LibcMemory & { syscall?: (...a: unknown[]) => unknown };


/** Area layout (offsets from the area's start): counters and the header of the call each step belongs to. */
const W = 0;
const D = 64;
const G = 128;
/** Per parity p: [seq, desc, bytes] of the call that wrote the step (int32 each) at HEAD + 64p. */
const HEAD = 192;
/** Doorbell: bumped after a counter move that a peer may sleep on, the word it sleeps on (futex). */
const BELL = 384;
/** Non-zero while this rank may be asleep on a peer's doorbell: a publisher then wakes it. */
const ASLEEP = 448;
/** A word of the header page the wasm plane proves its mapping with. */
const PROBE = 1024;
const DATA = 4096;
export const areaBytes = (step: number) => DATA + 4 * step;
/**
 * The byte ranges of an area that a call of one exchange touches: the header page with the counters and
 * the first `oneShot` bytes of both input areas. Only these are mapped with their pages (MAP_POPULATE)
 * when the areas are set up; the rest (the pipelined path's 4 steps, 8 MiB a rank by default) is faulted
 * in by the first calls that use it: populating every area whole took ~3.3 ms per rank's area of a rank's
 * set-up at the world's start (issue #14), for calls that a decode loop's all-reduces never make. The whole
 * area is still allocated at set-up (prefaultArea): its size was chosen from the space free in /dev/shm
 * (./shm-link.ts), and a job starting next sizes its own from what is free then.
 */
export function shortSpans(step: number, oneShot: number): [number, number][] {
  const os = roundUp(Math.min(step, oneShot), PAGE);
  return os > 0 ? [[0, DATA + os], [DATA + step, os]] : [[0, DATA]];
}
const inArea = (step: number, p: number) => DATA + p * step;
const outArea = (step: number, p: number) => DATA + (2 + p) * step;

/** Where one rank's area is, as advertised at rendezvous. */
export interface ArInfo {
  off: number;
  step: number;
  /** This rank sets its areas up when the world starts (earlySetUp): the start-up exchange runs only
   *  where every rank says so, since a per-rank environment (mpirun -x) may set it on some ranks only. */
  early?: boolean;
  /** This rank's TPRUN_SHM_ONE_SHOT_BYTES: which calls take the one-exchange protocol and which the stepped
   *  one. Ranks that disagreed met in different protocols over the same areas and returned wrong sums
   *  (mpirun -x on some ranks only): shmAllReducePlan refuses it. */
  oneShot?: number;
  /** Where early: how many small allReduces this rank's world makes through the user's path when it starts
   *  (TPRUN_SHM_WARM_CALLS, PeerWorld.warmPaths). Every rank makes the fewest any rank advertised (none where one
   *  advertised none: an older tprun), since each call needs every rank. */
  warm?: number;
}

/** Byte access to every local rank's area (own and peers'). */
export interface Plane {
  read(rank: number, off: number, dst: Uint8Array): void;
  /** Into our own area. */
  write(off: number, src: Uint8Array): void;
  get(rank: number, off: number): number;
  set(off: number, v: number): void;
  close(): void;
  readonly kind: 'wasm' | 'mmap' | 'pread';
  /** 'wasm' only: the areas live in this SIMD arena's memory, rank r's at `at[r]`, so the reduction reads
   *  peers' inputs where they are; `scratch` is private room of one step there. */
  readonly arena?: SimdArena;
  readonly at?: number[];
  readonly scratch?: number;
  /** 'wasm' only: private room where a one-exchange call leaves its input for oneShotFn to move into the area. */
  readonly stage?: number;
  /** 'wasm' only: the one-exchange call as one WebAssembly call (./oneshot-wasm.ts), made once per dtype and op;
   *  undefined where wasm has no vector op for them (or TPRUN_SHM_WASM_ONESHOT=0). */
  oneShotFn?(dtype: CommDType, op: ReduceOp): OneShotFn | undefined;
  /** Whether any peer has said it sleeps (its ring file's epoch): mapped planes read it without a syscall. */
  anyAsleep?(): boolean;
  /** Gives the core away for a moment (sched_yield), so a spinning rank does not starve a peer that
   *  shares its core; planes that cannot spin cheaply have none. */
  relax?(): void;
  /** Mapped planes where the futex system call could be bound: sleeps on `rank`'s doorbell while it still reads `seen`, up to ns; true when a ring woke it (not the timeout, not a changed word). */
  sleepOn?(rank: number, seen: number, ns: number): boolean;
  /** Wakes every process asleep on our doorbell. */
  ring?(): void;
}

/** pread/pwrite on the files: Node's own means, one kernel copy per move. */
export class FilePlane implements Plane {
  readonly kind = 'pread';
  private i32 = new Int32Array(1);
  private i32b = new Uint8Array(this.i32.buffer);
  constructor(private me: number, private fds: number[], private offs: number[]) {}
  read(rank: number, off: number, dst: Uint8Array): void {
    let done = 0;
    while (done < dst.byteLength) {
      const n = readSync(this.fds[rank], dst, done, dst.byteLength - done, this.offs[rank] + off + done);
      if (n <= 0) throw new CommError(`rank ${rank}'s shared-memory file is shorter than advertised`);
      done += n;
    }
  }
  write(off: number, src: Uint8Array): void {
    let done = 0;
    while (done < src.byteLength) done += writeSync(this.fds[this.me], src, done, src.byteLength - done, this.offs[this.me] + off + done);
  }
  get(rank: number, off: number): number {
    readSync(this.fds[rank], this.i32b, 0, 4, this.offs[rank] + off);
    return this.i32[0];
  }
  set(off: number, v: number): void {
    this.i32[0] = v;
    writeSync(this.fds[this.me], this.i32b, 0, 4, this.offs[this.me] + off);
  }
  close(): void {}
}

/**
 * The memory plane's switches, parsed in this one place and read once where a world's areas start (and once
 * before the ranks meet, where it sets up early, earlySetUp): TPRUN_SHM_MMAP (0: no koffi, the pread/pwrite plane),
 * TPRUN_SHM_WASM (0: the areas mapped, but not into the SIMD module's memory), TPRUN_SHM_WASM_ONESHOT (0:
 * short calls in JavaScript there), TPRUN_SHM_FUTEX_US (microseconds of futex sleep; unset: the default
 * for the cores, futexNs; 0: none, and syscall(2) is not loaded) and TPRUN_SHM_ONE_SHOT_BYTES (the largest
 * call of one exchange, ONE_SHOT_BYTES; 0: none). The futex knob was read twice, by two rules ('00' loaded
 * syscall for a sleep of 0), the wasm ones at the first call rather than the world's start, and the
 * one-exchange size when the module loaded: a bad value failed the world's loading itself, also for a
 * world of one or one without shared memory.
 */
export interface MemorySwitches {
  mmap: boolean;
  wasm: boolean;
  wasmOneShot: boolean;
  futexUs?: number;
  oneShotBytes: number;
}
const memorySwitches = (env: NodeJS.ProcessEnv = process.env): MemorySwitches => ({
  mmap: onOff('TPRUN_SHM_MMAP', env),
  wasm: onOff('TPRUN_SHM_WASM', env),
  wasmOneShot: onOff('TPRUN_SHM_WASM_ONESHOT', env),
  futexUs: wholeNumber('TPRUN_SHM_FUTEX_US', undefined, env),
  oneShotBytes: oneShotBytes(env),
});
/** TPRUN_SHM_ONE_SHOT_BYTES (ONE_SHOT_BYTES unset), advertised at rendezvous (ArInfo.oneShot). */
export const oneShotBytes = (env: NodeJS.ProcessEnv = process.env): number => wholeNumber('TPRUN_SHM_ONE_SHOT_BYTES', ONE_SHOT_BYTES, env);

/**
 * TPRUN_SHM_WARM_CALLS (default WARM_CALLS; 0: none): small allReduces a world whose areas were set up early
 * makes through the user's own path when it starts, then one barrier (PeerWorld.warmPaths), advertised at
 * rendezvous (ArInfo.warm).
 */
export function warmCalls(env: NodeJS.ProcessEnv = process.env): number {
  const n = wholeNumber('TPRUN_SHM_WARM_CALLS', WARM_CALLS, env);
  if (n > MAX_WARM_CALLS) throw new InputError(`TPRUN_SHM_WARM_CALLS=${n}: not a whole number from 0 to ${MAX_WARM_CALLS}`);
  return n;
}

/** mmap and its kin through koffi (../util/libc.ts), unless TPRUN_SHM_MMAP=0; syscall(2) for the futex calls, unless TPRUN_SHM_FUTEX_US=0. */
const loadLibc = (sw: MemorySwitches): Libc | undefined => {
  const mem = sw.mmap ? libcMemory() : undefined;
  return mem && { ...mem, syscall: SYS_FUTEX !== undefined && sw.futexUs !== 0 ? libcSyscall() : undefined };
};

/** errno.h's ENOSPC (Linux, every architecture). */
const ENOSPC = 28;
/** futex(2)'s number (asm/unistd.h) where we know it: x86-64 and arm64. */
const SYS_FUTEX = ({ x64: 202, arm64: 98 } as Record<string, number>)[process.arch];
const FUTEX_WAIT = 0;
const FUTEX_WAKE = 1;

/**
 * The doorbell half of a mapped plane: `bells[r]` views rank r's doorbell word. A sleeper waits on the word
 * while it still holds the value it read (the kernel compares and queues under one lock, so a bump after
 * the read is never missed); a rank that moves a counter while a peer says it sleeps bumps its own bell
 * and wakes (ShmAllReduce.published). The word is in a file mapping, so the calls are the shared ones.
 */
function doorbell(libc: Libc, me: number, bells: Int32Array[]): Pick<Plane, 'sleepOn' | 'ring'> {
  const sys = libc.syscall;
  if (!sys) return {};
  const ts = new BigInt64Array(2);
  return {
    sleepOn: (rank, seen, ns) => {
      ts[0] = BigInt(Math.floor(ns / 1e9));
      ts[1] = BigInt(ns % 1e9);
      return Number(sys(SYS_FUTEX, 'void *', bells[rank], 'int', FUTEX_WAIT, 'int', seen, 'void *', ts, 'void *', null, 'int', 0)) === 0;
    },
    ring: () => { sys(SYS_FUTEX, 'void *', bells[me], 'int', FUTEX_WAKE, 'int', 0x7fffffff, 'void *', null, 'void *', null, 'int', 0); },
  };
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;
/** Where a ring file keeps its owner's sleep epoch (./shm-link.ts, ShmOut.setSleeping). */
const SLEEP_EPOCH = 64;

/** Four bytes unlikely to be there already, for the wasm plane's proof. Not crypto's getRandomValues:
 *  its first call loads WebCrypto's internals, ~3 ms of a rank's set-up (issue #14), for a proof that
 *  needs no secret. */
const anyWord = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, 4).setUint32(0, (Math.random() * 2 ** 32) >>> 0);

/** Touching a mapping past the end of its file is SIGBUS, not an error: every file must be long enough. */
const longEnough = (fds: number[], offs: number[], len: number) => fds.every((fd, r) => fstatSync(fd).size >= offs[r] + len);

/**
 * The areas mapped into this process (koffi calling libc's mmap), best first: into the memory of a SIMD
 * arena ('wasm': the vector loop then reads peers' inputs in place and writes its result where peers
 * gather it, two copies fewer per element than reducing through the arena's own slots), else anywhere
 * ('mmap'); undefined where neither can be had (the caller takes pread/pwrite).
 */
export function mapPlane(me: number, fds: number[], offs: number[], len: number, step: number, sw = memorySwitches()): Plane | undefined {
  // (Called only where the areas exist: `len` is areaBytes(step).)
  const libc = loadLibc(sw);
  if (!libc) return undefined;
  try {
    if (!longEnough(fds, offs, len)) return undefined;
  } catch {
    return undefined;
  }
  if (sw.wasm) {
    const w = wasmPlane(libc, me, fds, offs, len, step, sw.wasmOneShot, sw.oneShotBytes);
    if (w) return w;
  }
  return anyPlane(libc, me, fds, offs, len, shortSpans(step, sw.oneShotBytes));
}

/**
 * MAP_FIXED over pages of a WebAssembly memory: V8 reserves a wasm memory's address range up front and
 * never moves it unless it grows, and this arena is sized once, before mapping, and never grows. The
 * plane proves itself before use (a word stored through the arena must be what the file holds), else
 * the arena's own pages come back and the caller takes the next plane.
 */
function wasmPlane(libc: Libc, me: number, fds: number[], offs: number[], len: number, step: number, wasmOneShot: boolean, oneShotBytes: number): Plane | undefined {
  const arena = SimdArena.create();
  if (!arena) return undefined;
  const R = fds.length;
  const stride = roundUp(len, PAGE);
  // [scratch: one step][stage: a one-exchange call's input][header page of every rank's file][every rank's area]
  const scratch = 0;
  const stage = roundUp(step, 65536);
  // (As big as the largest call that fits one exchange; none where TPRUN_SHM_ONE_SHOT_BYTES is 0.)
  const heads = roundUp(stage + roundUp(oneShotBytes > 0 ? Math.min(step, oneShotBytes) : 0, 16), 65536);
  const at = fds.map((_, r) => heads + R * PAGE + r * stride);
  const total = heads + R * PAGE + R * stride;
  let mem: ArrayBuffer;
  const mapped: [number, number][] = [];
  const restore = () => {
    // The arena's own pages again where the files were (a failure leaves a file's shared mapping, which
    // is still writable memory: nothing to guard).
    for (const [o, n] of mapped) restorePages(libc, mem, o, n);
    mapped.length = 0;
  };
  try {
    arena.reserve(total);
    mem = arena.mem.buffer;
    const map = (o: number, n: number, fd: number, off: number, populate = true): boolean => {
      // The arena's address as koffi hands it to C, proven to be the arena itself before anything is
      // mapped over it: MAP_FIXED replaces whatever is there.
      const want = memoryPointer(libc, mem, o);
      if (want === null) return false;
      // Listed first: a MAP_FIXED that fails may already have removed the arena's pages there.
      mapped.push([o, n]);
      const p = libc.mmap(want, n, PROT_RW, MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0), fd, off);
      return p !== null && libc.koffi.address(p) === libc.koffi.address(want);
    };
    // Each area in pieces: what a short call touches with its page-table entries now (MAP_POPULATE: no
    // fault in the first calls), the rest faulted in by the first calls that use it (shortSpans).
    const pieces: [number, number, boolean][] = [];
    let o = 0;
    for (const [a, n] of shortSpans(step, oneShotBytes)) {
      if (a > o) pieces.push([o, a - o, false]);
      pieces.push([a, n, true]);
      o = a + n;
    }
    if (len > o) pieces.push([o, len - o, false]);
    for (let r = 0; r < R; r++) {
      if (!map(heads + r * PAGE, PAGE, fds[r], 0) || !pieces.every(([a, n, pop]) => map(at[r] + a, n, fds[r], offs[r] + a, pop))) {
        restore();
        return undefined;
      }
    }
    // The proof: a word stored through the arena is in the file, and a word written to the file shows.
    const probe = new Uint8Array(mem, at[me] + PROBE, 4);
    const word = new Uint8Array(4);
    anyWord(probe);
    readSync(fds[me], word, 0, 4, offs[me] + PROBE);
    const back = word.every((b, i) => b === probe[i]);
    anyWord(word);
    writeSync(fds[me], word, 0, 4, offs[me] + PROBE);
    if (!back || !word.every((b, i) => b === probe[i]) || arena.mem.buffer !== mem) {
      restore();
      return undefined;
    }
  } catch {
    restore();
    return undefined;
  }
  const bytes = new Uint8Array(mem);
  const flags = new Int32Array(mem);
  const epochs = new Float64Array(mem, heads, (R * PAGE) / 8);
  const layout = { me, at, step, W, D, G, HEAD, ASLEEP, DATA, scratch, stage, epochs: at.map((_, r) => heads + r * PAGE + SLEEP_EPOCH) };
  const fns = new Map<string, OneShotFn | undefined>();
  return {
    kind: 'wasm',
    arena,
    at,
    scratch,
    stage,
    oneShotFn: (dtype, op) => {
      if (!wasmOneShot) return undefined;
      const key = `${dtype}/${op}`;
      if (!fns.has(key)) fns.set(key, oneShotFn(layout, arena.mem, dtype, op));
      return fns.get(key);
    },
    read: (rank, off, dst) => dst.set(bytes.subarray(at[rank] + off, at[rank] + off + dst.byteLength)),
    write: (off, src) => bytes.set(src, at[me] + off),
    // Sequentially consistent: the data copied before a counter is published is seen by whoever sees it.
    get: (rank, off) => Atomics.load(flags, (at[rank] + off) >> 2),
    set: (off, v) => { Atomics.store(flags, (at[me] + off) >> 2, v); },
    anyAsleep: () => {
      for (let r = 0; r < R; r++) if (r !== me && epochs[(r * PAGE + SLEEP_EPOCH) / 8] !== 0) return true;
      return false;
    },
    relax: () => { libc.schedYield(); },
    ...doorbell(libc, me, at.map((o) => new Int32Array(mem, o + BELL, 1))),
    close: restore,
  };
}

/** The areas mapped wherever the kernel likes: one copy per move at memcpy speed. */
function anyPlane(libc: Libc, me: number, fds: number[], offs: number[], len: number, short: [number, number][]): Plane | undefined {
  const ptrs: unknown[] = [];
  const views: Uint8Array[] = [];
  const flags: Int32Array[] = [];
  const unmap = () => { for (const p of ptrs) libc.munmap(p, len); ptrs.length = 0; };
  const failed = (p: unknown) => mapFailed(libc.koffi, p);
  try {
    for (let r = 0; r < fds.length; r++) {
      // Mapped whole without its pages, then what short calls touch mapped again over it with them
      // (MAP_FIXED | MAP_POPULATE: page-table entries now, not one minor fault per page in the first
      // calls); the rest is faulted in by the calls that use it, as on the wasm plane (shortSpans).
      const p = libc.mmap(null, len, PROT_RW, MAP_SHARED, fds[r], offs[r]);
      if (failed(p)) {
        unmap();
        return undefined;
      }
      ptrs.push(p);
      const ab = libc.koffi.view(p, len);
      for (const [a, n] of short) {
        const want = memoryPointer(libc, ab, a, false);
        const q = want === null ? null : libc.mmap(want, n, PROT_RW, MAP_SHARED | MAP_FIXED | MAP_POPULATE, fds[r], offs[r] + a);
        if (failed(q) || libc.koffi.address(q) !== libc.koffi.address(want)) {
          unmap();
          return undefined;
        }
      }
      views[r] = new Uint8Array(ab);
      flags[r] = new Int32Array(ab, 0, DATA / 4);
    }
  } catch {
    unmap();
    return undefined;
  }
  return {
    kind: 'mmap',
    read: (rank, off, dst) => dst.set(views[rank].subarray(off, off + dst.byteLength)),
    write: (off, src) => views[me].set(src, off),
    get: (rank, off) => Atomics.load(flags[rank], off >> 2),
    set: (off, v) => { Atomics.store(flags[me], off >> 2, v); },
    relax: () => { libc.schedYield(); },
    ...doorbell(libc, me, flags.map((f) => new Int32Array(f.buffer, f.byteOffset + BELL, 1))),
    close: unmap,
  };
}

export interface ShmAllReduceDeps {
  /** Wait until `missing()` is empty (spinning, then sleeping; fails on a dead peer or the timeout). */
  wait(what: string, missing: () => number[], timeoutMs?: number): Promise<void>;
  /** Wake peers that sleep waiting for a counter we just moved. */
  nudge(): void;
  /** Tell these ranks we are in collective #a (inbox.ts NOTICE_PHASE): one that is in another collective #a fails naming both. */
  notice?(ranks: number[], a: number): void;
  /** More local ranks than cores (decided before ranks were bound to their cores, as the world's own
   *  spin is): a spinning rank may hold the core its peer needs. */
  oversubscribed: boolean;
}

export class ShmAllReduce {
  private gen = 0;
  private arena?: SimdArena;
  private scratch = new ArrayBuffer(0);
  private busy = false;
  private closed = false;
  private peers: number[] = [];
  /** A call's header [seq, desc, bytes], written in one move. */
  private head = new Int32Array(3);
  private headBytes = new Uint8Array(this.head.buffer);
  private theirHead = new Int32Array(3);
  private theirHeadBytes = new Uint8Array(this.theirHead.buffer);
  /** The call in progress (its round key) and whether its late peers were sent a notice yet. */
  private callA = 0;
  private noticed = false;

  /** Our doorbell's value (./shm-allreduce.ts, BELL): only we write it. */
  private bell = 0;
  /** oneShot's sources on the arena plane, per parity. */
  private oneShotIn?: number[][];
  /** oneShot's views of our input areas (per parity), of the scratch it reduces into and of the stage
   *  (where the wasm call takes its input from), on the arena plane, typed and sized as the last call's
   *  buffer: a decode loop's all-reduces all have one shape, and a view made per call was most of what a
   *  call allocated. */
  private views?: { dtype: CommDType; len: number; in: CommArray[]; out: CommArray; stage: CommArray };
  /** The last call's wasm one-exchange function (its dtype and op), looked up once per shape change. */
  private fast?: { dtype: CommDType; op: ReduceOp; fn: OneShotFn | undefined };
  /** The last wasm call's shape and what it needs, for now() to call it without a lookup. */
  private hot?: Hot;
  /** Calls that went through the wasm one-exchange function (the tests' evidence that it ran). */
  wasmCalls = 0;

  /** The memory plane, once made: when the world starts where it sets up early (earlySetUp, prepare), else at the first
   *  call (mapping costs a native module's load and the area's pages). */
  plane!: Plane;
  /** When the plane was made: 'early' (prepare, when the world started) or 'first call'. */
  planeMade?: 'early' | 'first call';
  /** Whether the world's start-up exchange ran (warm). */
  warmed = false;
  /** How many small allReduces the world makes through the user's path after that exchange (ArInfo.warm:
   *  the fewest any rank advertised; 0 where the exchange does not run). */
  readonly warmCalls: number;
  /** What making the plane threw (no room in /dev/shm): every call throws it. */
  private planeError?: unknown;

  /** How long block() sleeps on futexes (TPRUN_SHM_FUTEX_US), checked when the world starts. */
  private readonly futexNs: number;
  private readonly everyEarly: boolean;
  /** The largest call of one exchange (TPRUN_SHM_ONE_SHOT_BYTES, no more than a step). */
  private readonly oneShotMax: number;
  /** How long spin() waits on a counter before block() (TPRUN_SHM_SPIN_NS), checked when the world starts. */
  private readonly spinNs: bigint;
  /** Futex sleeps that a peer's ring ended (the futex test's evidence that waking works, not the 1 ms slice). */
  rung = 0;

  /** `everyEarly`: every rank advertised the early set-up at rendezvous (ArInfo.early), so all of them run
   *  warm's exchange. `futexUs`, `oneShotBytes`: TPRUN_SHM_FUTEX_US and TPRUN_SHM_ONE_SHOT_BYTES as read where
   *  the world's areas start (memorySwitches). */
  constructor(private me: number, private R: number, private makePlane: () => Plane, readonly step: number, private deps: ShmAllReduceDeps,
    { everyEarly = false, futexUs, oneShotBytes = ONE_SHOT_BYTES, warmCalls = 0 }: { everyEarly?: boolean; futexUs?: number; oneShotBytes?: number; warmCalls?: number } = {}) {
    this.everyEarly = everyEarly;
    this.warmCalls = everyEarly ? warmCalls : 0;
    this.oneShotMax = Math.min(oneShotBytes, step);
    for (let k = 1; k < R; k++) this.peers.push((me + k) % R);
    this.futexNs = futexNs(deps.oversubscribed, futexUs);
    this.spinNs = spinNs();
  }

  /**
   * Whether this call goes through the areas: every call of at least one element, whatever the plane (the
   * choice must not depend on anything that may differ between ranks). A short one is a single exchange
   * (a store, a flag, a load); longer ones are pipelined.
   */
  wants(n: number): boolean {
    return n > 0;
  }

  async run<T extends CommArray>(buf: T, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: string, timeoutMs?: number): Promise<T> {
    await this.call(seq, what, async () => {
      if (this.fitsOneShot(buf)) await this.oneShot(buf, op, dtype, seq, desc, what, timeoutMs);
      else await this.steps(buf, op, dtype, seq, desc, what, timeoutMs);
    });
    return buf;
  }

  /**
   * The frame of every call through the areas: a closed world refuses it; while it runs close() leaves
   * the mapping to it (it touches the areas until its next wait) and it unmaps at its end; the plane is
   * made at the first call.
   */
  private async call(seq: number, what: string, body: () => Promise<void>): Promise<void> {
    if (this.closed) throw new CommError(`${what}: the world is closed`);
    this.begin(seq);
    try {
      this.ready();
      await body();
    } finally {
      this.settle();
    }
  }

  /** Our header [seq, desc, bytes] for the step of parity p, in one move (what checkHead reads). */
  private writeHead(p: number, seq: number, desc: number, nbytes: number): void {
    this.head[0] = seq;
    this.head[1] = desc | 0;
    this.head[2] = nbytes;
    this.plane.write(HEAD + 64 * p, this.headBytes);
  }

  /**
   * run() for a caller with nothing queued ahead of it: a call of one exchange, once the areas are set up,
   * runs synchronously for as long as its peers keep up, and returns `buf` itself complete: no promise
   * and no microtask turn, which were half of a 1 KiB call's few microseconds. Else (a peer late past the
   * spin, a longer call, the first call) the promise of the rest. Throws what run() would reject with.
   */
  now<T extends CommArray>(buf: T, op: ReduceOp, dtype: CommDType, call: { readonly a: number; readonly what: string }, desc: number, timeoutMs?: number): T | Promise<T> {
    const seq = call.a;
    const h = this.hot;
    let rest: Promise<void> | undefined;
    if (h !== undefined && h.len === buf.length && h.dtype === dtype && h.op === op && !this.closed) {
      // The shape of the last short call (every call of a decode loop): its wasm call from here, the frame
      // (begin, settle) written out. A fresh process runs its first thousands of calls unoptimized, and V8
      // counts each small helper towards optimization on its own: one method gets there sooner.
      this.busy = true;
      this.callA = seq;
      this.noticed = false;
      try {
        const g = ++this.gen;
        (h.stage as Float32Array).set(buf as Float32Array);
        this.wasmCalls++;
        const r = h.fn(g, seq, desc | 0, h.nbytes, h.spins);
        if (r === OneShot.Done) (buf as Float32Array).set(h.out as Float32Array);
        else rest = this.afterWasm(r, h, buf, op, dtype, seq, desc, call, timeoutMs, g);
      } finally {
        if (!rest) this.settle();
      }
    } else {
      if (!this.plane || this.closed || !this.fitsOneShot(buf)) return this.run(buf, op, dtype, seq, desc, call.what, timeoutMs);
      this.begin(seq);
      try {
        rest = this.oneShot(buf, op, dtype, seq, desc, call, timeoutMs);
      } finally {
        if (!rest) this.settle();
      }
    }
    if (!rest) return buf;
    return rest.then(() => { this.settle(); return buf; }, (e: unknown) => { this.settle(); throw e; });
  }

  private fitsOneShot(buf: CommArray): boolean {
    return buf.byteLength <= this.oneShotMax;
  }

  /** A call starts: close() leaves the mapping to it until settle(). */
  private begin(seq: number): void {
    this.busy = true;
    this.callA = seq;
    this.noticed = false;
  }

  /** A call ended: a close() that came during it unmaps now. */
  private settle(): void {
    this.busy = false;
    if (this.closed) this.plane?.close();
  }

  private ready(): void {
    if (this.plane) return;
    if (this.planeError !== undefined) throw this.planeError;
    this.makeNow('first call');
  }

  private makeNow(when: 'early' | 'first call'): void {
    try {
      const plane = this.makePlane();
      if (!plane.arena) {
        this.arena = SimdArena.create();
        // The reduction's slots exist and are touched before the first reduction, as the areas' pages are.
        if (this.arena) for (const sl of this.arena.slots(this.R, BLOCK)) sl.fill(0);
      }
      this.plane = plane;
      this.planeMade = when;
    } catch (e) {
      this.planeError = e;
      throw e;
    }
  }

  /**
   * Makes the plane now, when the world starts, as Open MPI sets up its shared-memory transport in
   * MPI_Init: a world's first allReduce then costs what any other does, where making the plane in it took
   * 20-90 ms (issue #14). What is slow to make and needs no peer (koffi, the SIMD module) was started
   * before the ranks met (warmShmAllReduce), so what is left here is the areas' pages and mappings. (At
   * the event loop's next turn instead, it mostly came too late: the world's barrier after initWorld
   * spins without a turn while peers keep up, and the first call made the plane itself.)
   */
  prepare(): void {
    if (this.plane || this.closed || this.planeError !== undefined) return;
    try {
      this.makeNow('early');
    } catch {
      // planeError: the first call throws it, naming the call
      return;
    }
    // The one-exchange module of a decode loop's all-reduces (float32 sums), ~1 ms to build and compile.
    // (WebAssembly.compile in the background would hand its module over only at an event loop turn,
    // which a world that spins in its barrier and then calls at once does not give.)
    (this.plane as Plane).oneShotFn?.('float32', 'sum');
  }

  /**
   * The areas' first exchange, when the world starts (after prepare, on every rank alike): a one-element
   * float32 sum through the path a short call takes, so that the user's first call does not meet that
   * path cold (V8 compiles each function, and wasm each function, at its first call: ~1 ms of a fresh
   * process's first allReduce, against the 60-100 us of Open MPI's, issue #14). Its header's collective
   * number is 0, which no collective of the world's has. A rank whose areas could not be set up fails
   * here, naming why, rather than leave its peers waiting for this exchange. Only where every rank set up
   * early (everyEarly, from rendezvous): a rank without the flag never calls it, and one with it would wait
   * for that rank's collective number 0 until the world's timeout.
   */
  warm(timeoutMs?: number): Promise<void> | undefined {
    if (this.planeError !== undefined) throw this.planeError;
    if (this.planeMade !== 'early' || !this.everyEarly || this.closed) return undefined;
    const r = this.now(new Float32Array(1), 'sum', 'float32', WARM_CALL, WARM_DESC, timeoutMs);
    this.warmed = true;
    return r instanceof Promise ? r.then(() => undefined) : undefined;
  }

  /**
   * reduceScatter through the areas: per step, every rank stores the next piece of every rank's chunk
   * into its input area and reduces its own chunk's piece from all of them in rank order; one exchange per
   * step and nothing to gather. The counters move together, as in oneShot.
   */
  async reduceScatter<T extends CommArray>(buf: T, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: string, timeoutMs?: number): Promise<T> {
    const { me, R } = this;
    const es = ELEM[dtype];
    const k = buf.length / R;
    const out = buf.slice(0, k) as T;
    const bytes = bytesOf(buf);
    const outBytes = bytesOf(out);
    await this.call(seq, what, async () => {
      const plane = this.plane;
      const q = Math.max(1, Math.floor(this.step / es / R));
      for (let from = 0; from < k || from === 0; from += q) {
        const m = Math.min(q, k - from);
        const g = ++this.gen;
        const p = g & 1;
        await this.waitAll(D, g - 2, what, 'input area', timeoutMs);
        const base = inArea(this.step, p);
        for (let r = 0; r < R; r++) plane.write(base + r * q * es, bytes.subarray((r * k + from) * es, (r * k + from + m) * es));
        this.writeHead(p, seq, desc, buf.byteLength);
        plane.set(W, g);
        this.published();
        await this.waitAll(W, g, what, 'exchange', timeoutMs);
        if (from === 0) for (const r of this.peers) this.checkHead(r, p, seq, desc, buf.byteLength, 'reduceScatter');
        const dst = outBytes.subarray(from * es, (from + m) * es);
        if (plane.arena) {
          const srcs = plane.at!.map((o) => o + base + me * q * es);
          this.reduceAt(dtype, op, buf, plane.scratch!, srcs, m * es, es);
          dst.set(new Uint8Array(plane.arena.mem.buffer, plane.scratch!, m * es));
        } else {
          dst.set(bytes.subarray((me * k + from) * es, (me * k + from + m) * es));
          this.reduceChunk(dtype, op, out, dst, base + me * q * es, -1);
        }
        plane.set(D, g);
        plane.set(G, g);
        this.published();
        if (k === 0) break;
      }
    });
    return out;
  }

  /** Until every peer's counter at `off` has reached generation g: a bounded spin on the mapped word, a
   *  futex sleep where that is on (block), then the world's wait (which spins more where cores allow,
   *  then sleeps until woken). Undefined when the counters are there without a promise turn. */
  private waitAll(off: number, g: number, what: Named, phase: string, timeoutMs?: number): Promise<void> | undefined {
    return this.spin(off, g) || this.block(off, g) ? undefined : this.sleep(off, g, `${nameOf(what)} (${phase})`, timeoutMs);
  }

  /** Whether every peer's counter at `off` has reached generation g, or does within the bounded spin. */
  private spin(off: number, g: number): boolean {
    if (this.arrived(off, g)) return true;
    const { plane } = this;
    if (!plane.relax) return false;
    // A peer a few microseconds behind is the common case between ranks that each have a core. Where
    // ranks outnumber cores, one that has no core right now gets ours at every turn (sched_yield); where
    // they do not, yielding would only hand the core to other processes for a whole time slice (on a
    // loaded machine a 1 MiB call took 10 ms instead of 0.4), so the spin keeps it.
    const relax = this.deps.oversubscribed ? plane.relax : undefined;
    const end = process.hrtime.bigint() + this.spinNs;
    for (let i = 1; ; i++) {
      if (this.arrived(off, g)) return true;
      if ((i & 63) === 0) {
        relax?.();
        if (process.hrtime.bigint() > end) return false;
      }
    }
  }

  /**
   * After the spin: asleep in the kernel (futex on the doorbell of a peer that is behind) for up to
   * TPRUN_SHM_FUTEX_US, woken within microseconds of the peer's move, with the core free meanwhile for
   * the peer where ranks outnumber cores (and for our own compiler and GC threads, bound to our core with
   * us). Without it such a rank slept in the event loop, whose wake-up takes tens of microseconds.
   * The event loop waits meanwhile, as it does in the world's own spin; what is still missing after
   * this goes to `sleep`.
   */
  private block(off: number, g: number): boolean {
    const { plane } = this;
    const ns = this.futexNs;
    if (!plane.sleepOn || !(ns > 0)) return false;
    const end = process.hrtime.bigint() + BigInt(Math.round(ns));
    // Said before the doorbells are read: a peer that moves after that read sees it and wakes us.
    plane.set(ASLEEP, 1);
    try {
      for (;;) {
        const late = this.peers.find((r) => this.behind(r, off, g));
        if (late === undefined) return true;
        const left = end - process.hrtime.bigint();
        if (left <= 0n) return false;
        const seen = plane.get(late, BELL);
        if (!this.behind(late, off, g)) continue;
        if (plane.sleepOn(late, seen, Math.min(FUTEX_SLICE_NS, Number(left)))) this.rung++;
      }
    } finally {
      plane.set(ASLEEP, 0);
    }
  }

  /** Whether rank r's counter at `off` is still short of generation g (counters wrap: compared modulo 2^32). */
  private behind(r: number, off: number, g: number): boolean {
    return ((this.plane.get(r, off) - g) | 0) < 0;
  }

  private arrived(off: number, g: number): boolean {
    for (const r of this.peers) if (this.behind(r, off, g)) return false;
    return true;
  }

  /** The rest of waitAll once the spin is over: the world's wait, which sleeps until woken. */
  private async sleep(off: number, g: number, what: string, timeoutMs?: number): Promise<void> {
    const missing = () => {
      let m: number[] | undefined;
      for (const r of this.peers) if (this.behind(r, off, g)) (m ??= []).push(r);
      return m ?? NONE;
    };
    // A peer this late may be in another collective under the same number, waiting for a message from us
    // that the areas never send: tell it which call we are in, once per call.
    // (Not for the world's start-up exchange, which no collective of the inbox's knows.)
    if (!this.noticed && this.callA !== WARM_CALL.a) {
      this.noticed = true;
      const late = missing();
      if (late.length) this.deps.notice?.(late, this.callA);
    }
    await this.deps.wait(what, missing, timeoutMs);
    if (this.closed) throw new CommError(`${what}: the world is closed`);
  }

  /** Peers that sleep waiting for a counter we just moved are woken (mapped planes know whether any does). */
  private published(): void {
    const { plane } = this;
    if (plane.ring) {
      // The counter was stored before this load (both sequentially consistent), and a sleeper says so
      // before it reads the counter: either it sees our move, or we see it and ring (the bell moves, so
      // a sleeper that read the bell before is not put to sleep on it, or is woken).
      for (const r of this.peers) {
        if (plane.get(r, ASLEEP) !== 0) {
          plane.set(BELL, ++this.bell);
          plane.ring();
          break;
        }
      }
    }
    if (!plane.anyAsleep || plane.anyAsleep()) this.deps.nudge();
  }

  /**
   * A call that fits one step (the arena plane): every rank stores its whole buffer into its input area
   * and reduces every rank's input straight from the areas in rank order, so one flag per rank is the
   * only exchange. The three counters move together, keeping the pipelined path's rules for the next call.
   * Synchronous while every peer arrives within the spin: undefined once done, else the promise of the rest.
   */
  private oneShot(buf: CommArray, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: Named, timeoutMs?: number): Promise<void> | undefined {
    const g = ++this.gen;
    const h = this.plane.oneShotFn && this.hotFor(buf, op, dtype);
    if (h) {
      // The whole exchange in one wasm call (./oneshot-wasm.ts); where it stops short, afterWasm carries on.
      (h.stage as Float32Array).set(buf as Float32Array);
      this.wasmCalls++;
      return this.afterWasm(h.fn(g, seq, desc | 0, h.nbytes, h.spins), h, buf, op, dtype, seq, desc, what, timeoutMs, g);
    }
    return this.viaAreas(buf, op, dtype, seq, desc, what, timeoutMs, g);
  }

  /** oneShot in JavaScript from its start: our input area's previous user, generation g-2, must have been read by every peer. */
  private viaAreas(buf: CommArray, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: Named, timeoutMs: number | undefined, g: number): Promise<void> | undefined {
    const wait = this.waitAll(D, g - 2, what, 'input area', timeoutMs);
    return wait ? wait.then(() => this.exchange(buf, op, dtype, seq, desc, what, timeoutMs, g)) : this.exchange(buf, op, dtype, seq, desc, what, timeoutMs, g);
  }

  /** The rest of a call after its wasm call returned r (./oneshot-wasm.ts, OneShot): from where it stopped. */
  private afterWasm(r: OneShot, h: Hot, buf: CommArray, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: Named, timeoutMs: number | undefined, g: number): Promise<void> | undefined {
    if (r === OneShot.Done || r === OneShot.DoneWake) {
      (buf as Float32Array).set(h.out as Float32Array);
      if (r === OneShot.DoneWake) this.published();
      return undefined;
    }
    // A header disagrees: combine fails naming how.
    if (r === OneShot.Mismatch) return this.combine(buf, undefined, op, dtype, seq, desc, g);
    if (r === OneShot.Published) {
      this.published();
      const wait = this.waitAll(W, g, what, 'exchange', timeoutMs);
      return wait ? wait.then(() => this.combine(buf, undefined, op, dtype, seq, desc, g)) : this.combine(buf, undefined, op, dtype, seq, desc, g);
    }
    // AreaBusy: nothing was written.
    return this.viaAreas(buf, op, dtype, seq, desc, what, timeoutMs, g);
  }

  private exchange(buf: CommArray, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: Named, timeoutMs: number | undefined, g: number): Promise<void> | undefined {
    const { plane } = this;
    const p = g & 1;
    const nbytes = buf.byteLength;
    const views = plane.arena ? this.arenaViews(buf, dtype) : undefined;
    const bytes = views ? undefined : bytesOf(buf);
    if (views) views.in[p].set(buf);
    else plane.write(inArea(this.step, p), bytes!);
    this.writeHead(p, seq, desc, nbytes);
    plane.set(W, g);
    this.published();
    const wait = this.waitAll(W, g, what, 'exchange', timeoutMs);
    return wait ? wait.then(() => this.combine(buf, bytes, op, dtype, seq, desc, g)) : this.combine(buf, bytes, op, dtype, seq, desc, g);
  }

  /** Every input is there: reduce them in rank order into buf and release our areas. */
  private combine(buf: CommArray, bytes: Uint8Array | undefined, op: ReduceOp, dtype: CommDType, seq: number, desc: number, g: number): undefined {
    const { plane } = this;
    const p = g & 1;
    const nbytes = buf.byteLength;
    for (const r of this.peers) this.checkHead(r, p, seq, desc, nbytes);
    if (plane.arena) {
      // Every rank's input area of this parity, in rank order (computed once: the plane never moves).
      const srcs = (this.oneShotIn ??= [0, 1].map((q) => plane.at!.map((o) => o + inArea(this.step, q))))[p];
      const dst = plane.scratch!;
      this.reduceAt(dtype, op, buf, dst, srcs, nbytes, ELEM[dtype]);
      (buf as Float32Array).set(this.arenaViews(buf, dtype).out as Float32Array);
    } else this.reduceChunk(dtype, op, buf, bytes!, inArea(this.step, p), -1);
    plane.set(D, g);
    plane.set(G, g);
    this.published();
    return undefined;
  }

  private arenaViews(buf: CommArray, dtype: CommDType): { in: CommArray[]; out: CommArray; stage: CommArray } {
    const v = this.views;
    if (v && v.dtype === dtype && v.len === buf.length) return v;
    const C = VIEW[dtype];
    const mem = this.plane.arena!.mem.buffer;
    const at = this.plane.at![this.me];
    const n = buf.length;
    this.views = { dtype, len: n, in: [0, 1].map((p) => new C(mem, at + inArea(this.step, p), n)), out: new C(mem, this.plane.scratch!, n), stage: new C(mem, this.plane.stage!, n) };
    return this.views;
  }

  /** The wasm one-exchange function for (dtype, op), or undefined (then the JavaScript path runs). */
  private fastFn(dtype: CommDType, op: ReduceOp): OneShotFn | undefined {
    const f = this.fast;
    if (f && f.dtype === dtype && f.op === op) return f.fn;
    this.fast = { dtype, op, fn: this.plane.oneShotFn!(dtype, op) };
    return this.fast.fn;
  }

  /** What a wasm call of this shape needs (kept as `hot` for the next call), or undefined where there is no wasm call for it. */
  private hotFor(buf: CommArray, op: ReduceOp, dtype: CommDType): Hot | undefined {
    const h = this.hot;
    if (h && h.len === buf.length && h.dtype === dtype && h.op === op) return h;
    const fn = this.fastFn(dtype, op);
    if (!fn) return undefined;
    const v = this.arenaViews(buf, dtype);
    this.hot = { dtype, op, len: buf.length, nbytes: buf.byteLength, fn, stage: v.stage, out: v.out, spins: this.deps.oversubscribed ? 1 : WASM_SPINS };
    return this.hot;
  }

  /** mem[dst] = mem[srcs[0]] op ... (rank order) for nbytes, in the arena (SIMD where it has the op). */
  private reduceAt(dtype: CommDType, op: ReduceOp, proto: CommArray, dst: number, srcs: number[], nbytes: number, es: number): void {
    const arena = this.plane.arena!;
    if (SimdArena.supports(dtype, op)) return arena.reduce3(dtype, op, dst, srcs, nbytes, es);
    const mem = arena.mem.buffer;
    const view = (o: number) => like(proto, new Uint8Array(mem, o, nbytes));
    reduceInto(dtype, op, view(dst), srcs.map(view));
  }

  private async steps(buf: CommArray, op: ReduceOp, dtype: CommDType, seq: number, desc: number, what: string, timeoutMs?: number): Promise<void> {
    const { me, R, plane, peers } = this;
    const es = ELEM[dtype];
    const bytes = bytesOf(buf);
    const total = buf.length;
    const perStep = Math.max(R, Math.floor(this.step / es));
    const S = Math.ceil(total / perStep);
    const g0 = this.gen;
    this.gen += S;
    const inPlace = !!plane.arena;
    // Step s covers elements [s*perStep, ...); its chunk r is [lo(s, r), lo(s, r+1)).
    const len = (s: number) => Math.min(perStep, total - s * perStep);
    const lo = (s: number, r: number) => {
      const m = len(s);
      const base = Math.floor(m / R);
      return s * perStep + r * base + Math.min(r, m % R);
    };
    const waitAll = (off: number, g: number, phase: string) => this.waitAll(off, g, what, phase, timeoutMs);

    const writeInput = async (s: number) => {
      const g = g0 + s + 1; // generations start at 1: a fresh area reads 0
      const p = g & 1;
      // The area's previous user, step g-2, must have been reduced by every peer.
      await waitAll(D, g - 2, 'input area');
      const base = inArea(this.step, p);
      const from = s * perStep * es;
      const a = lo(s, me) * es;
      const b = lo(s, me + 1) * es;
      const end = (s * perStep + len(s)) * es;
      if (a > from) plane.write(base, bytes.subarray(from, a));
      if (end > b) plane.write(base + (b - from), bytes.subarray(b, end));
      if (s === 0) this.writeHead(p, seq, desc, total * es);
      plane.set(W, g);
      this.published();
    };

    const reduce = async (s: number) => {
      const g = g0 + s + 1;
      const p = g & 1;
      await waitAll(W, g, 'reduce-scatter');
      if (s === 0) for (const r of peers) this.checkHead(r, p, seq, desc, total * es);
      // Our output area's step g-2 must have been gathered by every peer.
      await waitAll(G, g - 2, 'output area');
      const from = s * perStep;
      const a = lo(s, me);
      const b = lo(s, me + 1);
      const inOff = inArea(this.step, p) + (a - from) * es;
      const outOff = outArea(this.step, p);
      if (inPlace) this.reduceInPlace(dtype, op, buf, a, b, inOff, outOff);
      else this.reduceChunk(dtype, op, buf, bytes.subarray(a * es, b * es), inOff, outOff);
      plane.set(D, g);
      this.published();
    };

    const gather = async (s: number) => {
      const g = g0 + s + 1;
      const p = g & 1;
      await waitAll(D, g, 'all-gather');
      for (const r of peers) {
        const a = lo(s, r) * es;
        const b = lo(s, r + 1) * es;
        if (b > a) plane.read(r, outArea(this.step, p), bytes.subarray(a, b));
      }
      plane.set(G, g);
      this.published();
    };

    // Write ahead by one step, gather behind by one: a rank waits for its peers only where it must.
    await writeInput(0);
    for (let s = 0; s < S; s++) {
      if (s + 1 < S) await writeInput(s + 1);
      await reduce(s);
      if (s > 0) await gather(s - 1);
    }
    await gather(S - 1);
  }

  /** A peer's step header must describe the same call: same collective, op, dtype and length. */
  private checkHead(r: number, p: number, seq: number, desc: number, nbytes: number, name = 'allReduce'): void {
    // The counter read before it ordered it after the write. One read (one syscall) on the pread plane;
    // mapped planes load the words where they are, allocating nothing.
    const { plane } = this;
    const h = HEAD + 64 * p;
    const th = this.theirHead;
    if (plane.kind === 'pread') plane.read(r, h, this.theirHeadBytes);
    else for (let i = 0; i < 3; i++) th[i] = plane.get(r, h + 4 * i);
    const theirSeq = th[0];
    const theirDesc = th[1] >>> 0;
    const theirBytes = th[2];
    if (theirSeq !== seq) throw new CommError(`${name} #${seq}: rank ${r} is at collective #${theirSeq} (the ranks' collectives no longer line up)`);
    if (theirDesc !== desc >>> 0) throw new CommError(mismatch(seq, r, theirDesc, this.me, desc >>> 0));
    // Stored as int32: compare modulo 2^32 (a length differing by exactly 4 GiB is not worth a wider field).
    if (theirBytes !== (nbytes | 0)) throw new CommError(`${name} #${seq}: rank ${r} reduces ${theirBytes >>> 0} bytes where rank ${this.me} reduces ${nbytes} (mismatched lengths)`);
  }

  /**
   * The arena plane: our output area = every rank's input chunk reduced in rank order, peers' read where
   * they lie and ours from a block of private arena memory it is copied into, then copied into buf[a, b).
   * Block by block: our copy-in, the vector loop and the copy-out meet in cache, and main memory sees
   * each peer's bytes read once and our result written once to the area and once to buf.
   */
  private reduceInPlace(dtype: CommDType, op: ReduceOp, buf: CommArray, a: number, b: number, inOff: number, outOff: number): void {
    const { me } = this;
    const at = this.plane.at!;
    const mem = this.plane.arena!.mem.buffer;
    const scratch = this.plane.scratch!;
    const es = ELEM[dtype];
    const own = bytesOf(buf).subarray(a * es, b * es);
    const dst0 = at[me] + outOff;
    const srcs = at.map(() => 0);
    for (let o = 0; o < own.byteLength; o += BLOCK) {
      const n = Math.min(BLOCK, own.byteLength - o);
      new Uint8Array(mem, scratch, n).set(own.subarray(o, o + n));
      for (let r = 0; r < at.length; r++) srcs[r] = r === me ? scratch : at[r] + inOff + o;
      this.reduceAt(dtype, op, buf, dst0 + o, srcs, n, es);
      own.set(new Uint8Array(mem, dst0 + o, n), o);
    }
  }

  /**
   * buf[a, b) = peers' inputs op ours, in rank order, block by block so that reads, the vector loop
   * and the writes meet in cache; the result also goes to our output area for peers to gather (outOff
   * -1: nowhere else).
   */
  private reduceChunk(dtype: CommDType, op: ReduceOp, buf: CommArray, own: Uint8Array, inOff: number, outOff: number): void {
    const { me, R, plane } = this;
    const es = ELEM[dtype];
    const simd = this.arena && SimdArena.supports(dtype, op);
    const slots = simd ? this.arena!.slots(R, Math.min(BLOCK, own.byteLength)) : this.scratchSlots(R, Math.min(BLOCK, own.byteLength));
    for (let o = 0; o < own.byteLength; o += BLOCK) {
      const n = Math.min(BLOCK, own.byteLength - o);
      const part = slots.map((sl) => sl.subarray(0, n));
      for (let r = 0; r < R; r++) if (r !== me) plane.read(r, inOff + o, part[r]);
      if (simd) {
        part[me].set(own.subarray(o, o + n));
        this.arena!.reduce(dtype, op, part, es);
        own.set(part[0], o);
      } else {
        const view = like(buf, own.subarray(o, o + n));
        reduceInto(dtype, op, view, part.map((sl, r) => (r === me ? view : like(buf, sl))));
      }
      if (outOff >= 0) plane.write(outOff + o, own.subarray(o, o + n));
    }
  }

  private scratchSlots(R: number, bytes: number): Uint8Array[] {
    const stride = Math.ceil(bytes / 16) * 16;
    if (this.scratch.byteLength < stride * R) this.scratch = new ArrayBuffer(stride * R);
    return Array.from({ length: R }, (_, r) => new Uint8Array(this.scratch, r * stride, bytes));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // A call in flight touches the mapping until its next wait: it unmaps when it ends.
    if (!this.busy) this.plane?.close();
  }
}

const NONE: number[] = [];
/** The start-up exchange (ShmAllReduce.warm): collective number 0 (a world's are 1 and up), a float32 sum. */
const WARM_CALL = { a: 0, what: 'allReduce of the world\'s start (the shared-memory areas\' first exchange)' } as const;
const WARM_DESC = descriptor('allReduce', 'float32', 'sum');
/** The array type each dtype travels in (half precision as its bits). */
const VIEW: Record<CommDType, new (b: ArrayBufferLike, off: number, n: number) => CommArray> = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, uint8: Uint8Array, int8: Int8Array, float16: Uint16Array, bfloat16: Uint16Array,
};
/** A shape of short call that has a wasm call, with its views of the stage and the result (ShmAllReduce.hotFor). */
interface Hot {
  dtype: CommDType;
  op: ReduceOp;
  len: number;
  nbytes: number;
  fn: OneShotFn;
  stage: CommArray;
  out: CommArray;
  spins: number;
}
/** What errors call a collective: the string, or the collective's round, whose name is built only when asked. */
type Named = string | { readonly what: string };
const nameOf = (n: Named) => (typeof n === 'string' ? n : n.what);
/**
 * Up to this many bytes a call is one exchange in which every rank reduces the whole buffer; above it the
 * pipelined reduce-scatter + all-gather, whose two more waits cost less than reducing R times the bytes.
 * Measured with 2 ranks against Open MPI in the same runs (session 7): one exchange is ahead at 8 and
 * 16 KiB (0.53-0.62x Open MPI's median call against 1.0x pipelined at 8 KiB), even at 32 KiB, and behind
 * from 48 KiB (0.81-0.86x against 0.63-0.67x) and 64 KiB (0.68-0.91x against 0.53-0.63x).
 */
const ONE_SHOT_BYTES = 32 * 1024;
/**
 * Small allReduces a world makes through the user's path when it starts, after the areas' first exchange
 * (ShmAllReduce.warm): a fresh process otherwise met that path cold in its first calls (V8 compiles each
 * function at its first call, fills its inline caches in the next ones and moves the hot ones to baseline
 * and optimized code over the next tens to hundreds, the optimizing compiles on helper threads that share the
 * rank's one core where it has one). Enough calls
 * for the waits' loops and the calls' own functions to leave the interpreter; docs/performance.md has the
 * measurements and what the calls cost the launch.
 */
const WARM_CALLS = 128;
/** Reduction block: R of them stay in L2 while read, reduced and written out. */
const BLOCK = 64 * 1024;
/** Loads of the peers' counters the wasm one-exchange call makes before it hands a wait to the
 *  JavaScript spin (a few microseconds, a peer's usual lead; the JavaScript spin then runs TPRUN_SHM_SPIN_NS). */
const WASM_SPINS = 1 << 14;
/** The bounded spin on a mapped counter before the world's own wait (ns; TPRUN_SHM_SPIN_NS, checked when the world starts). */
const spinNs = (env: NodeJS.ProcessEnv = process.env): bigint => BigInt(wholeNumber('TPRUN_SHM_SPIN_NS', 100_000, env));
/** After the spin, how long a rank sleeps on its peers' doorbells (futex) before the world's wait; 0 = not
 *  at all. Default: 10 ms where local ranks outnumber cores (the world's own wait then sleeps at once, in
 *  the event loop), else none (it spins TPRUN_SPIN_US, 10 ms, where a peer with a core of its own answers
 *  soonest; on the 2-core machine a futex there cost the first thousands of calls ~1 µs of median each
 *  while saving a third of their stalls, a wash). */
function futexNs(oversubscribed: boolean, us: number | undefined): number {
  if (us === undefined) return oversubscribed ? 10_000_000 : 0;
  return us * 1000;
}
/** One futex sleep at most: a lost wake-up costs no more than this. */
const FUTEX_SLICE_NS = 1_000_000;


/** What every rank advertised at rendezvous, as far as the areas go. */
interface PeerAreas {
  rank: number;
  shm?: { ar?: ArInfo };
}

/**
 * Allocates our own area whole when the plane is made (tmpfs allocates on first touch; a full /dev/shm is an
 * error here, where a store into a mapping would be SIGBUS). Whole, not only what short calls use
 * (shortSpans): the area's size was taken from the space free when the world started (./shm-link.ts), and
 * space left unallocated looked free to the next job on the machine, which sized a full area there too;
 * both died with ENOSPC at their first long call.
 */
function prefaultArea(ownFd: number, off: number, len: number, mmap: boolean): void {
  // posix_fallocate where koffi is in use anyway (the mapped planes): the kernel zeroes the pages, about a
  // third of the time of writing 8 MiB of zeros from JavaScript at a world's start. Where it cannot
  // (ENOSPC aside), the writes below.
  const fallocate = mmap ? libcFallocate() : undefined;
  const room = (why: string) => new CommError(`no room in /dev/shm for this rank's ${Math.ceil(len / 2 ** 20)} MiB allReduce area (${why}); TPRUN_SHM_AR_STEP=0 turns the areas off`);
  const rc = fallocate?.(ownFd, off, len);
  if (rc === 0) return;
  if (rc === ENOSPC) throw room('posix_fallocate: ENOSPC');
  const z = new Uint8Array(Math.min(len, 1 << 20));
  try {
    for (let o = 0; o < len; o += z.byteLength) writeSync(ownFd, z, 0, Math.min(z.byteLength, len - o), off + o);
  } catch (e) {
    throw room((e as Error).message);
  }
}

/**
 * Whether this world takes the areas: only when every pair of ranks shares memory (`can`, the same matrix
 * on every rank) and every rank has an area (advertised at rendezvous), so all ranks decide alike. Each
 * rank maps the areas at its first call through them (./shm-allreduce.ts, ShmAllReduce.run).
 */
export function shmAllReducePlan(me: number, peers: PeerAreas[], opened: (number | undefined)[], ownFd: number, can: boolean[][]):
  { start(deps: ShmAllReduceDeps): ShmAllReduce } | undefined {
  if (!can.every((row, i) => row.every((c, j) => c || i === j)) || !peers.every((p) => p.shm?.ar)) return undefined;
  const step = Math.min(...peers.map((p) => p.shm!.ar!.step));
  const fds = peers.map((p) => (p.rank === me ? ownFd : opened[p.rank]!));
  const offs = peers.map((p) => p.shm!.ar!.off);
  const everyEarly = peers.every((p) => p.shm!.ar!.early === true);
  const warm = everyEarly ? Math.min(...peers.map((p) => p.shm!.ar!.warm ?? 0)) : 0;
  // Every rank sees the same table, so all refuse alike (none waits in a call the others never make).
  const odd = peers.find((p) => p.shm!.ar!.oneShot !== peers[0].shm!.ar!.oneShot);
  if (odd) {
    const v = (p: PeerAreas) => p.shm!.ar!.oneShot ?? 'not advertised (an older tprun)';
    throw new InputError(`TPRUN_SHM_ONE_SHOT_BYTES differs between ranks: rank ${peers[0].rank} has ${v(peers[0])}, rank ${odd.rank} has ${v(odd)} (the ranks of a node must agree on it: set it alike for all)`);
  }
  return {
    start: (deps) => {
      // Refused here (InputError), where the world's start fails in one line, not at some call.
      const sw = memorySwitches();
      const len = areaBytes(step);
      const s = new ShmAllReduce(me, peers.length, () => {
        prefaultArea(ownFd, offs[me], len, sw.mmap);
        return mapPlane(me, fds, offs, len, step, sw) ?? new FilePlane(me, fds, offs);
      }, step, deps, { everyEarly, futexUs: sw.futexUs, oneShotBytes: sw.oneShotBytes, warmCalls: warm });
      // What this rank advertised for this world (ArInfo.early), not the process's latest decision: a rank
      // that advertised the early set-up must prepare, or peers that did wait in warm's exchange for it.
      if (peers.find((p) => p.rank === me)?.shm?.ar?.early === true) s.prepare();
      return s;
    },
  };
}

/**
 * Whether a world sets its areas up when it starts instead of at its first allReduce, as Open MPI sets up
 * its shared-memory transport in MPI_Init: the first call then costs what any other does. TPRUN_SHM_EARLY=1
 * or 0 decides; unset, it is the default where every local rank has a core (`oversubscribed` false: local
 * ranks do not outnumber the job's CPUs, ./affinity.ts ranksOutnumberCpus): there a rank's set-up (koffi's
 * binary without its loader, only the pages short calls touch populated, shortSpans) overlaps its peers'
 * and does not lengthen a launch, where with more ranks than cores every rank's CPU is launch time and their
 * allReduces sleep on each other anyway (docs/performance.md has the measurements). Ranks may disagree (a
 * per-rank environment): each sets up when told, and the start-up exchange runs only where all said so
 * (ArInfo.early).
 */
export const earlySetUp = (oversubscribed: boolean) => onOff('TPRUN_SHM_EARLY', process.env, !oversubscribed);

/**
 * Whether the world starting now sets its areas up early, where it may have areas at all (two or more
 * local ranks over shared memory): decided by its PeerWorld.start and handed to its ShmOut (./links.ts,
 * ./shm-link.ts), which advertises it with the area it makes (ArInfo.early). Handed along rather than kept
 * in this module, since two worlds started together in one process may decide differently.
 */
export const worldStartsEarly = (localSize: number, oversubscribed: boolean): boolean =>
  localSize >= 2 && transport() === 'shm' && earlySetUp(oversubscribed);

/**
 * Starts what an early set-up needs before the ranks have met (ShmOut, once it made an area it advertises
 * as early, before rendezvous): the SIMD module compiles on V8's compile threads, and koffi loads at the
 * event loop's next turn, while the rank waits for its peers. Only there: where a world has no areas the
 * memory switches below are never read, and a bad one must not fail the world.
 */
export function warmShmAllReduce(): void {
  // The switches are read here, where a bad value fails the world's start in one line; read in the callback
  // below they were an uncaught exception (a stack trace, exit 1).
  const sw = memorySwitches();
  SimdArena.precompile();
  setImmediate(() => {
    // Nothing may throw out of a callback: what failed here fails again, naming itself, where the first
    // call through the areas loads koffi (mapPlane), and the call is there to raise it.
    try { loadLibc(sw); } catch { /* see above */ }
  });
}
