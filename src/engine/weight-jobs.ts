// The weight file written by a pool of worker threads (weight-worker.ts), one job = one weight of a lazy
// shard, or rows of a large one. Each worker reads its source rows, converts or transposes them, takes
// their CRC-32 and writes them at their final offset (positional writes: the order jobs finish in does
// not matter), so every stage of the copy scales with cores, where the streaming writer (weight-file.ts)
// reads and converts on one thread. The main thread writes any weight that has no origin a worker can
// open (quantized or in-memory tensors) and takes the CRC of the alignment padding (not written: the
// file is truncated to its size, so it reads as zeros), and joins the CRCs in file order with
// crc32Combine (zlib's crc32_combine, checksum.ts). The bytes are the streaming writer's: the same fill
// functions make them, and a test compares both.

import { open, type FileHandle } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { crc32 } from '../util/fast-crc32.js';
import { InputError } from '../core/errors.js';
import { workerEnv, workerThreads } from '../util/threads.js';
import { rankCores } from '../rank/affinity.js';
import { crc32Combine } from './checksum.js';
import { fileURLToPath } from 'node:url';
import { bundlesOn, current } from '../util/bundle.js';
import { writeAt } from './positional-write.js';
import type { LazyOrigin } from './lazy-shard.js';
import { type DeferredTensor, type EngineFloat, deferredRows, simdSeed } from './weight-convert.js';

/** A job as posted to a worker: rows [r0, r1) of the shard's `weight`, written from file offset `offset`. */
export interface JobMessage { id: number; weight: string; transposed: boolean; dtype: EngineFloat; r0: number; r1: number; offset: number }
/** `code`: a system error's (ENOSPC, EIO...), kept so the error names the file it was writing (outdir.ts withPath). */
/** `windows`: checkpoint windows the job mapped (wasm-map.ts); `crcImpl`: the worker's CRC-32 (fast-crc32.ts). */
/** `bundled`: the worker runs from its CommonJS bundle (workerFile). */
export type JobReply = { id: number; crc: number; seeded: boolean; windows: number; crcImpl: 'libdeflate' | 'zlib'; bundled: boolean } | { id: number; error: string; input: boolean; code?: string };

/** One slot of the weight file (weight-file.ts's entries). */
export interface Slot { offset: number; length: number; data?: Uint8Array; deferred?: DeferredTensor }

/**
 * Threads that write a weight file (util/threads.ts: TPRUN_BUILD_THREADS, else this rank's cores up to
 * 16: rankCores, the cores it may use shared among the local ranks, which build at the same time; each
 * worker holds one source tensor). Fewer than 2: the streaming writer on the main thread. From 2 cores:
 * since sources are mapped rather than read (half-simd.ts) and the CRC runs at memory speed
 * (fast-crc32.ts), a worker's fill, CRC and write of one 4 MiB step touch its bytes while they are still
 * in cache, where the streaming writer's chunks pass from the converting thread to a checksum thread and
 * a libuv thread (1.1B shape, tp 1, on the shared 2-core machine, 5 runs alternating with the streaming
 * writer, bench/results/issue14-build-session7.jsonl: parallel/streaming 0.79-1.07x the wall time,
 * medians 2.95 against 3.71 s; 0.78-1.18x the CPU). `cores` and `bound` are for tests (rankCores).
 */
export const buildThreads = (env: NodeJS.ProcessEnv = process.env, cores?: number, bound?: boolean): number =>
  workerThreads(16, env, 2, rankCores(env, cores, bound));

/** Plain weights larger than this are cut into jobs of rows (a transpose needs its whole source: one job). */
const JOB_BYTES = 32 << 20;
/** A worker that does not answer a job in this long is taken for hung. */
const STALL_MS = 600_000;

interface Job extends JobMessage { length: number }

/** The origin most of the deferred bytes come from (a file's weights all come from one shard). */
export function jobOrigin(slots: Slot[]): { origin: LazyOrigin; bytes: number } | undefined {
  const bytes = new Map<LazyOrigin, number>();
  for (const s of slots) {
    const o = s.deferred?.job?.origin;
    if (o) bytes.set(o, (bytes.get(o) ?? 0) + s.length);
  }
  let best: { origin: LazyOrigin; bytes: number } | undefined;
  for (const [origin, n] of bytes) if (!best || n > best.bytes) best = { origin, bytes: n };
  return best;
}

/** Jobs done by workers so far, those done with the main thread's SIMD converter (simdSeed), pools
 *  prestarted, checkpoint windows the workers mapped, and the CRC-32s they took by node:zlib (tests and
 *  the build's trace check the parallel writer ran, or did not, and how); workers terminated by a failed
 *  write's close and workers alive now (tests check a failed write leaves none). */
export const jobStats = { jobs: 0, seeded: 0, prestarts: 0, windows: 0, zlibCrcJobs: 0, bundledJobs: 0, terminated: 0, live: 0 };

const WORKER_MODULE = new URL('./weight-worker.js', import.meta.url);
const WORKER_BUNDLE = new URL('./weight-worker.bundle.cjs', import.meta.url);

/**
 * The workers' code: the bundle of weight-worker.js and everything it imports (scripts/bundle.mjs) where
 * the build made it and it is as new as its modules (util/bundle.ts), else the ES module. A worker loads
 * its code on its own thread, so ~45 ES modules were resolved, read and compiled again for each one: on
 * the shared 2-core machine a worker's start cost ≈ 150 ms of CPU from the modules, ≈ 100 from the bundle
 * (a bare worker ≈ 50), with the SIMD converter seeded either way (issue #14).
 */
export function workerFile(env: NodeJS.ProcessEnv = process.env): URL {
  return bundlesOn(env) && current(fileURLToPath(WORKER_BUNDLE)) ? WORKER_BUNDLE : WORKER_MODULE;
}

function jobsOf(slots: Slot[], origin: LazyOrigin, jobBytes: number): { jobs: Job[]; rest: Slot[] } {
  const jobs: Job[] = [], rest: Slot[] = [];
  for (const s of slots) {
    const j = s.deferred?.job;
    if (!j || j.origin !== origin || s.length === 0) {
      rest.push(s);
      continue;
    }
    const rows = deferredRows(s.deferred!);
    const rowBytes = s.length / rows;
    const per = j.splittable ? Math.max(8, Math.floor(jobBytes / rowBytes / 8) * 8) : rows;
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      jobs.push({ id: jobs.length, weight: j.weight, transposed: j.transposed, dtype: j.dtype, r0, r1, offset: s.offset + r0 * rowBytes, length: (r1 - r0) * rowBytes });
    }
  }
  // Largest first: the last jobs to start are small, so the threads finish together.
  jobs.sort((a, b) => b.length - a.length);
  return { jobs, rest };
}

interface Part { offset: number; length: number; crc: number }

/**
 * Rows [r0, r1) of a deferred tensor made a step at a time in one buffer, each step's CRC-32 taken while
 * its bytes are in cache: iterating yields every step's bytes and their offset from row r0, for the
 * caller to write; `crc` is then the rows'. Steps are whole groups of 8 rows where the buffer holds 8,
 * which keeps the transposes on their SIMD path (half-simd.ts). The parallel writer's main thread and
 * its workers both make rows so (the bytes are the streaming writer's: the same fill functions).
 */
export class RowSteps {
  crc = 0;
  constructor(private d: DeferredTensor, private r0: number, private r1: number, private buf: Uint8Array) {}

  *[Symbol.iterator](): Generator<{ view: Uint8Array; at: number }> {
    const { d, r0, r1, buf } = this;
    const rowBytes = d.byteLength / deferredRows(d);
    const step = Math.max(1, Math.floor(buf.length / rowBytes / 8) * 8 || Math.floor(buf.length / rowBytes));
    for (let r = r0; r < r1; r += step) {
      const n = Math.min(step, r1 - r);
      const view = buf.subarray(0, n * rowBytes);
      d.fill(view, r, r + n);
      this.crc = crc32(view, this.crc);
      yield { view, at: (r - r0) * rowBytes };
    }
  }
}

// The write token. Buffered writes to one file are serialized by the kernel anyway (the inode's lock,
// taken by ext4's and xfs's write paths around the copy into the page cache: ext4_buffered_write_iter),
// and threads that wait there spin while the holder copies (rwsem_spin_on_owner in perf of the streaming
// writer, whose libuv threads write up to four chunks at once). So writers take turns on a futex
// instead (Atomics.wait sleeps), one chunk each: the file is written by one thread at a time, as fast as
// one thread copies, and the others convert meanwhile.
/** Takes the token (blocking: worker threads). */
export function acquire(lock: Int32Array): void {
  while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1, 1000);
}
/** ES2024's Atomics.waitAsync (in V8 since Node 16), not in this project's TypeScript lib. */
interface AtomicsWaitAsync { waitAsync(a: Int32Array, i: number, v: number, ms: number): { async: boolean; value: Promise<string> | string } }
/**
 * Takes the token without blocking the thread (the main thread, between its writes). Throws once
 * `stopped` says the write has failed: a worker stuck in a write holds the token for good, and the main
 * thread must not wait for it (the pool's close terminates that worker).
 */
export async function acquireAsync(lock: Int32Array, stopped: () => boolean): Promise<void> {
  while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) {
    if (stopped()) throw new Error('weight file: stopped');
    const w = (Atomics as unknown as AtomicsWaitAsync).waitAsync(lock, 0, 1, 1000);
    if (w.async) await w.value;
  }
}
export function release(lock: Int32Array): void {
  Atomics.store(lock, 0, 0);
  Atomics.notify(lock, 0, 1);
}

/**
 * Writes the file of `slots` (`size` bytes) with `threads` workers opening `origin`; returns its CRC-32.
 * `chunkBytes`: each worker's buffer (at least 8 rows of the widest weight); `jobBytes`: where plain
 * weights are cut into several jobs.
 */
export async function writeParallel(path: string, slots: Slot[], size: number, origin: LazyOrigin, threads: number, chunkBytes: number, jobBytes = JOB_BYTES, onStarted?: () => void, signal?: AbortSignal): Promise<number> {
  const { jobs, rest } = jobsOf(slots, origin, jobBytes);
  const parts: Part[] = [];
  const fh = await open(path, 'w');
  // Everything after the open is inside the try: a failure to size the file or start the workers
  // still closes it.
  let pool: JobPool | undefined;
  let stop: (() => void) | undefined;
  try {
    // At its full size from the start: the padding between weights reads as zeros without being written.
    await fh.truncate(size);
    const lock = new Int32Array(new SharedArrayBuffer(4));
    pool = takePool(origin, threads);
    const p = pool;
    // The caller gave up on the file (a segment graph failed to encode or write: engine.ts writeRank):
    // stop at once rather than after every job, the file is discarded anyway.
    stop = () => p.abort();
    if (signal?.aborted) stop();
    signal?.addEventListener('abort', stop, { once: true });
    const done = pool.run({ fd: fh.fd, lock, chunkBytes }, jobs, (j, crc) => {
      parts.push({ offset: j.offset, length: j.length, crc });
      jobStats.jobs++;
    });
    // The workers have their first jobs: the caller may use this thread between the awaits below.
    onStarted?.();
    // Meanwhile this thread writes the weights without an origin (and takes the padding's CRC).
    const mine = writeRest({ fh, lock, stopped: () => p.stopped }, slots, rest, size, chunkBytes, parts).catch((e) => { p.abort(); throw e; });
    // Both settle before the file is closed; the first failure is the one reported.
    const [a, b] = await Promise.allSettled([done, mine]);
    if (a.status === 'rejected' && !(b.status === 'rejected' && p.abortedByMain)) throw a.reason;
    if (b.status === 'rejected') throw b.reason;
  } finally {
    if (stop) signal?.removeEventListener('abort', stop);
    // After a failure nothing the workers are doing is wanted: they are terminated, not waited for.
    await pool?.close(pool.stopped);
    await fh.close();
  }
  parts.sort((a, b) => a.offset - b.offset);
  let crc = 0, at = 0;
  for (const p of parts) {
    if (p.offset !== at) throw new Error(`weight file: bytes ${at}..${p.offset} were not written`);
    crc = crc32Combine(crc, p.crc, p.length);
    at += p.length;
  }
  if (at !== size) throw new Error(`weight file: ${at} of ${size} bytes written`);
  return crc;
}

/** The file as the main thread writes it: its handle, its write token (shared with the workers) and whether its write has failed. */
interface MainFile { fh: FileHandle; lock: Int32Array; stopped: () => boolean }

async function writeAll({ fh, lock, stopped }: MainFile, view: Uint8Array, at: number): Promise<void> {
  await acquireAsync(lock, stopped);
  try {
    await writeAt(fh, view, at);
  } finally {
    release(lock);
  }
}

async function writeRest(file: MainFile, all: Slot[], rest: Slot[], size: number, chunkBytes: number, parts: Part[]): Promise<void> {
  const { stopped } = file;
  // Padding: the gaps between slots (each under the 64 KiB alignment), none after the last.
  let end = 0;
  const gaps: Part[] = [];
  for (const s of all) {
    if (s.offset > end) gaps.push({ offset: end, length: s.offset - end, crc: 0 });
    end = Math.max(end, s.offset + s.length);
  }
  if (end !== size) throw new Error(`weight file: slots end at ${end}, the file at ${size}`);
  // The file was truncated to its size (zeros there already): only their CRC is needed.
  const zeros = new Uint8Array(gaps.reduce((m, g) => Math.max(m, g.length), 0));
  for (const g of gaps) parts.push({ ...g, crc: crc32(zeros.subarray(0, g.length)) });
  let buf: Uint8Array | undefined;
  for (const s of rest) {
    if (stopped()) return;
    if (s.length === 0) continue;
    if (s.data) {
      await writeAll(file, s.data, s.offset);
      parts.push({ offset: s.offset, length: s.length, crc: crc32(s.data) });
      continue;
    }
    const d = s.deferred!;
    const rows = deferredRows(d);
    const rowBytes = s.length / rows;
    buf ??= new Uint8Array(Math.max(chunkBytes, rowBytes));
    if (buf.length < rowBytes) buf = new Uint8Array(rowBytes);
    const steps = new RowSteps(d, 0, rows, buf);
    for (const { view, at } of steps) {
      await writeAll(file, view, s.offset + at);
      if (stopped()) return;
    }
    parts.push({ offset: s.offset, length: s.length, crc: steps.crc });
  }
}

/** Workers that take jobs in turn, each the next one as soon as it is free. */
class JobPool {
  private workers: Worker[];
  private failed: Error | undefined;
  /** Set when the main thread's own part failed (its error is the one to report). */
  abortedByMain = false;
  get stopped(): boolean { return this.failed !== undefined; }
  private reject: ((e: Error) => void) | undefined;
  private closing = false;
  private exited: Promise<unknown>[];

  constructor(readonly origin: LazyOrigin, readonly size: number) {
    // Workers run no transpose pool of their own (transpose-pool.ts): they are the parallelism.
    const env = workerEnv({ TPRUN_BUILD_THREADS: '0' });
    // The SIMD converter is made once, here, and given to every worker (weight-convert.ts simdSeed).
    const simd = simdSeed();
    const file = workerFile();
    this.workers = Array.from({ length: size }, () => new Worker(file, { workerData: { origin, simd }, env }));
    jobStats.live += size;
    this.exited = this.workers.map((w) => new Promise((resolve) => w.once('exit', (c) => { jobStats.live--; resolve(c); })));
    for (const w of this.workers) {
      // A pool started ahead of its file (prestart) never keeps the process alive; run() refs it.
      w.unref();
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => { if (!this.closing) this.fail(new Error(`weight worker exited (code ${code})`)); });
    }
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    this.reject?.(e);
  }

  /** Runs `jobs` on the file `fd` (this process's descriptor: descriptors are per process). */
  run(file: { fd: number; lock: Int32Array; chunkBytes: number }, jobs: Job[], onDone: (j: Job, crc: number) => void): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    for (const w of this.workers) {
      w.ref();
      w.postMessage({ file });
    }
    return new Promise<void>((resolve, reject) => {
      this.reject = reject;
      let next = 0, open = 0;
      const feed = (w: Worker) => {
        if (this.failed) return;
        if (next < jobs.length) {
          const j = jobs[next++];
          open++;
          const { length: _len, ...msg } = j;
          const timer = setTimeout(() => this.fail(new Error(`weight worker: ${j.weight} rows ${j.r0}..${j.r1} not written in ${STALL_MS / 1000} s`)), STALL_MS);
          timer.unref();
          w.once('message', (r: JobReply) => {
            clearTimeout(timer);
            open--;
            if ('error' in r) return this.fail(r.input ? new InputError(r.error) : Object.assign(new Error(r.error), r.code ? { code: r.code } : {}));
            if (r.seeded) jobStats.seeded++;
            jobStats.windows += r.windows;
            if (r.crcImpl === 'zlib') jobStats.zlibCrcJobs++;
            if (r.bundled) jobStats.bundledJobs++;
            onDone(j, r.crc);
            feed(w);
          });
          w.postMessage(msg);
        } else if (open === 0) {
          resolve();
        }
      };
      if (jobs.length === 0) return resolve();
      for (const w of this.workers) feed(w);
    });
  }

  /** Stops handing out jobs (another part of the write failed). */
  abort(): void {
    this.abortedByMain = !this.failed;
    this.fail(new Error('weight file: stopped'));
  }

  /** Ends every worker: each finishes its job, if any, and exits; a hung one is terminated, and every
   *  one at once with `now` (the write failed: what they are making would be thrown away). */
  async close(now = false): Promise<void> {
    this.closing = true;
    for (const w of this.workers) w.postMessage(null);
    if (now) {
      jobStats.terminated += this.workers.length;
      for (const w of this.workers) void w.terminate();
    }
    const t = setTimeout(() => { for (const w of this.workers) void w.terminate(); }, 30_000);
    t.unref();
    try {
      await Promise.all(this.exited);
    } finally {
      clearTimeout(t);
    }
  }
}

// A pool started while the engine's graph is still being built (WeightFile.add calls prestart once the
// weights of one shard are worth it), so the workers' start (module loading, opening the checkpoint)
// overlaps that work instead of coming after it. Unused for a minute, it is closed.
let warm: { pool: JobPool; timer: NodeJS.Timeout } | undefined;
const WARM_IDLE_MS = 60_000;

/** Starts `threads` workers for the weights of `origin` ahead of writeParallel. */
export function prestart(origin: LazyOrigin, threads: number): void {
  if (warm?.pool.origin === origin && warm.pool.size === threads) return;
  const pool = new JobPool(origin, threads);
  jobStats.prestarts++;
  const timer = setTimeout(() => {
    if (warm?.pool !== pool) return;
    warm = undefined;
    void pool.close();
  }, WARM_IDLE_MS);
  timer.unref();
  const old = warm;
  warm = { pool, timer };
  if (old) {
    clearTimeout(old.timer);
    void old.pool.close();
  }
}

/** The prestarted pool when it fits, else a new one. */
function takePool(origin: LazyOrigin, threads: number): JobPool {
  const w = warm;
  if (w?.pool.origin === origin && w.pool.size === threads) {
    warm = undefined;
    clearTimeout(w.timer);
    return w.pool;
  }
  return new JobPool(origin, threads);
}
