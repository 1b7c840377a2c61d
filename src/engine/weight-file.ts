// One rank's weights as ONNX external data: a single file, each tensor at an offset aligned to 64 KiB
// so onnxruntime can memory-map it (64 KiB is the largest mapping granularity it meets, Windows').
//
// Two writers. Where the process may use several cores and the weights come from a lazily read
// checkpoint (build --model), worker threads write them (weight-jobs.ts: each opens the checkpoint and
// writes whole weights at their offsets). Otherwise the file streams on this thread, as follows.
//
// The streaming writer produces the file front to back in chunks; deferred tensors (weight-convert.ts)
// are converted straight into the chunk that holds their final offset. While the main thread fills the
// next chunk, the previous ones are written by libuv's thread pool and checksummed (CRC-32, for the
// engine's manifest: checksum.ts says why not sha256) by a worker thread, so converting, writing and
// checksumming overlap.

import { FAST_MIN, LOAD_MIN, crc32, crc32Impl, crcStats } from '../util/fast-crc32.js';
import { wasmMapStats } from '../util/wasm-map.js';
import { open, type FileHandle } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { crc32Combine, crc32Hex } from './checksum.js';
import type { ExternalRef } from './onnx-proto.js';
import { type DeferredTensor, chunkBuffers, deferredRows, isDeferred, seedStats } from './weight-convert.js';
import type { Tensor } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { traceSpan } from '../util/trace.js';
import { MIN_SHARE_BYTES, transposeThreads } from './transpose-pool.js';
import { buildThreads, jobOrigin, jobStats, prestart, writeParallel } from './weight-jobs.js';
import { writeAt } from './positional-write.js';

export const WEIGHT_ALIGN = 64 * 1024;

/**
 * Bytes per chunk of the file; a few are in flight at once. A chunk is written in pieces of WRITE_PIECE
 * (positional-write.ts says why). The chunk itself stays larger: a transpose fills it column block by
 * column block over every row of its source, and a wider block touches each source page once for more
 * columns (build, same machine: 4 MiB chunks in 512 KiB writes 5.1-5.2 CPU-s, 512 KiB chunks 5.6-6.9,
 * 8 MiB chunks in one write 5.5-6.0; issue #14). A chunk also holds one share per transpose thread
 * (transpose-pool.ts) and 8 rows of the widest tensor, so transposes stay on their SIMD path.
 */
const CHUNK = 4 << 20;
const RING = 4;

/** Chunk size for a file of these entries (see CHUNK). */
function chunkFor(entries: Entry[]): number {
  let widest = 0;
  for (const e of entries) if (e.deferred && e.deferred.byteLength) widest = Math.max(widest, e.deferred.byteLength / deferredRows(e.deferred));
  return Math.max(CHUNK, (transposeThreads() + 1) * MIN_SHARE_BYTES, Math.ceil((8 * widest) / 4096) * 4096);
}
/** Below this the file is checksummed on the main thread (a worker's start costs more than it saves). */
const WORKER_HASH_MIN = 64 << 20;

/**
 * TPRUN_BUILD_WRITER=streaming keeps the streaming writer where the parallel one would run (tprun bench
 * build times both on machines where the parallel one is the default).
 */
export function streamingForced(): boolean {
  const w = process.env.TPRUN_BUILD_WRITER;
  if (w === undefined || w === '' || w === 'auto') return false;
  if (w === 'streaming') return true;
  throw new InputError(`TPRUN_BUILD_WRITER=${w}: must be streaming or auto`);
}

/** Below this many bytes from one lazy shard, the file is written by the streaming writer (a worker's start costs more). */
const PARALLEL_MIN = 64 << 20;

/**
 * Knobs for tests: chunk size, where worker checksums start, how many checksum workers; the threads of
 * the parallel writer (weight-jobs.ts; fewer than 2: the streaming writer), where it starts, its job size.
 */
export interface WriteOptions {
  chunkBytes?: number; workerHashMin?: number; hashThreads?: number; threads?: number; parallelMin?: number; jobBytes?: number;
  /** Called once the parallel writer's workers have their jobs (the caller's thread is then free for other
   *  work until the write settles); never by the streaming writer, which needs this thread throughout. */
  onStarted?: () => void;
  /** Aborted: the caller no longer wants the file (the parallel writer terminates its workers at once). */
  signal?: AbortSignal;
}

interface Entry { name: string; offset: number; length: number; data?: Uint8Array; deferred?: DeferredTensor }

export class WeightFile {
  private entries: Entry[] = [];
  private byName = new Map<string, ExternalRef>();
  /** Slots by the key of the bytes they hold (DeferredTensor.same): a tied lm_head shares the embedding's. */
  private bySame = new Map<string, ExternalRef>();
  size = 0;
  /** Bytes of tensor data (the file less its alignment padding). */
  dataBytes = 0;
  /** Bytes of weights that worker threads can make, by shard (weight-jobs.ts); whether their pool was started. */
  private jobBytes = new Map<object, number>();
  private prestarted = false;

  constructor(readonly location: string) {}

  /**
   * Reserves a slot for the tensor's bytes (once per name: segments sharing a weight share its bytes).
   * Deferred tensors are converted only when the file is written.
   */
  add(name: string, data: Uint8Array | DeferredTensor): ExternalRef {
    const known = this.byName.get(name);
    if (known) return known;
    const same = data instanceof Uint8Array ? undefined : data.same;
    const twin = same === undefined ? undefined : this.bySame.get(same);
    if (twin) {
      this.byName.set(name, twin);
      return twin;
    }
    const length = isDeferred(data as Tensor | DeferredTensor) ? (data as DeferredTensor).byteLength : (data as Uint8Array).length;
    const offset = Math.ceil(this.size / WEIGHT_ALIGN) * WEIGHT_ALIGN;
    const ref = { location: this.location, offset, length };
    this.entries.push(data instanceof Uint8Array ? { name, offset, length, data } : { name, offset, length, deferred: data as DeferredTensor });
    this.byName.set(name, ref);
    if (same !== undefined) this.bySame.set(same, ref);
    this.size = offset + length;
    this.dataBytes += length;
    const origin = (data as DeferredTensor).job?.origin;
    if (origin && !this.prestarted) {
      const n = (this.jobBytes.get(origin) ?? 0) + length;
      this.jobBytes.set(origin, n);
      // Enough for the parallel writer: its workers start now, while the rest of the graph is built.
      if (n >= PARALLEL_MIN) {
        this.prestarted = true;
        const threads = buildThreads();
        // Not when the streaming writer is forced (it is the baseline bench build times): idle workers
        // would run beside it.
        if (threads >= 2 && !streamingForced()) prestart(origin, threads);
      }
    }
    return ref;
  }

  /** Writes the file and returns its CRC-32 as 8 hex digits (recorded in the manifest to detect damage). */
  async write(path: string, opts: WriteOptions = {}): Promise<string> {
    const threads = opts.threads ?? buildThreads();
    const from = jobOrigin(this.entries);
    const parallel = !streamingForced() && threads >= 2 && from !== undefined && from.bytes >= (opts.parallelMin ?? PARALLEL_MIN);
    // The trace says which writer ran and on how many threads (tprun bench build reports it).
    const args = { bytes: this.size, tensors: this.entries.length, writer: parallel ? 'parallel' : 'streaming', threads: parallel ? threads : 1 + (this.size >= (opts.workerHashMin ?? WORKER_HASH_MIN) ? opts.hashThreads ?? hashThreads() : 0) + transposeThreads() };
    // Also which source and checksum paths it took: checkpoint windows mapped (this thread's and the
    // workers'; util/wasm-map.ts) and the CRC-32 used (libdeflate or node:zlib: fast-crc32.ts), so a
    // build whose ranks lack koffi is seen to have read and used zlib (test/engine-source-map.test.js).
    const windows = () => wasmMapStats.windows + jobStats.windows;
    const before = { windows: windows(), zlib: jobStats.zlibCrcJobs, jobs: jobStats.jobs, bundled: jobStats.bundledJobs, ...crcStats };
    const paths = (a: Record<string, unknown>) => {
      a.mapped_windows = windows() - before.windows;
      // And what the parallel writer's workers ran: their bundle or the ES modules (weight-jobs.ts workerFile).
      if (parallel) a.worker_code = jobStats.bundledJobs > before.bundled ? 'bundle' : jobStats.jobs > before.jobs ? 'modules' : 'none';
      // The parallel writer's: what its workers, which checksummed the weights, say they ran (asking
      // crc32Impl would load koffi in this thread, which no longer loads it for its few small pieces:
      // fast-crc32.ts LOAD_MIN). The streaming writer's checksum threads share this one's environment.
      const workersFast = jobStats.jobs > before.jobs && jobStats.zlibCrcJobs === before.zlib;
      a.crc32 = (parallel ? workersFast : crc32Impl() === 'libdeflate') ? 'libdeflate' : 'zlib';
      // libdeflate's is the CRC of the buffers from this size; smaller ones (a weight's tail, the padding)
      // were zlib's: FAST_MIN, or LOAD_MIN where this thread took some above FAST_MIN before loading it.
      if (a.crc32 === 'libdeflate') a.crc32_zlib_below_bytes = crcStats.zlibFrom > before.zlibFrom ? LOAD_MIN : FAST_MIN;
      // Where this thread's SIMD converter came from (the seed the build kept, or made now: simd-seed-file.ts).
      a.simd_seed = seedStats.origin;
      // Given up by the caller (a segment graph failed beside it): the workers were stopped, not waited for.
      if (opts.signal?.aborted) a.aborted = String((opts.signal.reason as Error)?.message ?? opts.signal.reason);
    };
    return traceSpan('weights.write', async () => {
      try {
        return parallel
          ? crc32Hex(await writeParallel(path, this.entries, this.size, from.origin, threads, opts.chunkBytes ?? chunkFor(this.entries), opts.jobBytes, opts.onStarted, opts.signal))
          : await this.writeFile(path, opts);
      } finally {
        paths(args);
      }
    }, args);
  }

  private async writeFile(path: string, opts: WriteOptions): Promise<string> {
    const fh = await open(path, 'w');
    const hasher = this.size >= (opts.workerHashMin ?? WORKER_HASH_MIN) ? new WorkerHasher(opts.hashThreads ?? hashThreads()) : new InlineHasher();
    const out = new ChunkWriter(fh, hasher, opts.chunkBytes ?? chunkFor(this.entries));
    try {
      for (const e of this.entries) {
        await out.zeros(e.offset - out.pos);
        if (e.data) await out.bytes(e.data);
        else await out.deferred(e.deferred!);
      }
      await out.flush();
      await out.drain();
      return await hasher.digest();
    } catch (err) {
      await out.drain().catch(() => undefined);
      throw err;
    } finally {
      out.release();
      hasher.close();
      await fh.close();
    }
  }
}

interface Hasher {
  update(buf: Uint8Array): Promise<void>;
  digest(): Promise<string>;
  close(): void;
}

class InlineHasher implements Hasher {
  private crc = 0;
  async update(buf: Uint8Array): Promise<void> { this.crc = crc32(buf, this.crc); }
  async digest(): Promise<string> { return crc32Hex(this.crc); }
  close(): void {}
}

// Each worker checksums whole chunks (views of the shared chunk buffers), each from zero; the parts are
// joined in file order with crc32Combine, so chunks can be checksummed on several threads at once (one
// thread checksums about as fast as the file is written, and transposes scale with cores). Each buffer
// is sent once and then named by its index: posting a SharedArrayBuffer is far dearer than a few numbers.
// The CRC comes from fast-crc32.ts (an ES module: imported, and messages wait in the port meanwhile).
const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const bufs = [];
import(workerData.crc).then(({ crc32 }) => parentPort.on('message', (m) => {
  if (m.sab) { bufs[m.reg] = m.sab; return; }
  parentPort.postMessage({ id: m.id, crc: crc32(new Uint8Array(bufs[m.b], m.off, m.len)) });
}));`;
const CRC_MODULE = new URL('../util/fast-crc32.js', import.meta.url).href;

/** Checksum workers: one per four cores this process may use, 1 to 3 (the ring holds 4 chunks). */
const hashThreads = () => Math.max(1, Math.min(3, availableParallelism() >> 2));

class CrcWorker {
  private w = new Worker(HASH_WORKER, { eval: true, workerData: { crc: CRC_MODULE } });
  private next = 0;
  private waiting = new Map<number, { resolve: (crc: number) => void; reject: (e: Error) => void }>();
  private failed: Error | undefined;
  private known = new Map<ArrayBufferLike, number>();

  constructor() {
    this.w.on('message', (m: { id: number; crc: number }) => {
      const p = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      p?.resolve(m.crc);
    });
    const fail = (e: Error) => {
      this.failed = e;
      for (const p of this.waiting.values()) p.reject(e);
      this.waiting.clear();
    };
    this.w.on('error', fail);
    this.w.on('exit', (code) => { if (this.waiting.size) fail(new Error(`checksum worker exited (code ${code})`)); });
  }

  crc(buf: Uint8Array): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    if (!(buf.buffer instanceof SharedArrayBuffer)) return Promise.reject(new Error('checksum worker: chunk is not shared memory'));
    let b = this.known.get(buf.buffer);
    if (b === undefined) {
      b = this.known.size;
      this.known.set(buf.buffer, b);
      this.w.postMessage({ reg: b, sab: buf.buffer });
    }
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.w.postMessage({ b, off: buf.byteOffset, len: buf.length, id });
    });
  }

  close(): void { void this.w.terminate(); }
}

class WorkerHasher implements Hasher {
  private workers: CrcWorker[];
  constructor(threads: number) { this.workers = Array.from({ length: Math.max(1, threads) }, () => new CrcWorker()); }
  private turn = 0;
  /** Each chunk's CRC (from zero) and length, in file order. */
  private parts: { crc: Promise<number>; len: number }[] = [];

  async update(buf: Uint8Array): Promise<void> {
    const crc = this.workers[this.turn++ % this.workers.length].crc(buf);
    crc.catch(() => undefined); // collected by digest(); the caller also awaits it
    this.parts.push({ crc, len: buf.length });
    await crc;
  }

  async digest(): Promise<string> {
    let crc = 0;
    for (const p of this.parts) crc = crc32Combine(crc, await p.crc, p.len);
    return crc32Hex(crc);
  }

  close(): void { for (const w of this.workers) w.close(); }
}

/**
 * Fills shared chunk buffers with consecutive bytes of the file and hands each full one to the writer
 * and the hasher. A chunk's bytes sit at buffer offsets congruent to their file offsets modulo 8, so
 * tensors can be converted into it through 16- and 32-bit views.
 */
class ChunkWriter {
  /** File offset of the next byte. */
  pos = 0;
  private ring: { buf: Uint8Array; busy: Promise<void> }[] = [];
  private slot = 0;
  private cur: Uint8Array;
  /** File offset of the current chunk's first byte, and that byte's offset in `cur`. */
  private base = 0;
  private lead = 0;

  private releaseBuffers: () => void;

  constructor(private fh: FileHandle, private hasher: Hasher, chunkBytes: number) {
    const { bufs, release } = chunkBuffers(RING, chunkBytes + 8);
    this.releaseBuffers = release;
    for (const buf of bufs) this.ring.push({ buf, busy: Promise.resolve() });
    this.cur = this.ring[0].buf;
  }

  /** Gives the buffers back (after drain()). */
  release(): void {
    this.releaseBuffers();
  }

  private get used(): number { return this.lead + (this.pos - this.base); }
  private get room(): number { return this.cur.length - this.used; }

  async zeros(n: number): Promise<void> {
    while (n > 0) {
      if (this.room === 0) await this.flush();
      const k = Math.min(n, this.room);
      this.cur.fill(0, this.used, this.used + k);
      this.pos += k;
      n -= k;
    }
  }

  async bytes(data: Uint8Array): Promise<void> {
    let at = 0;
    while (at < data.length) {
      if (this.room === 0) await this.flush();
      const k = Math.min(data.length - at, this.room);
      this.cur.set(data.subarray(at, at + k), this.used);
      this.pos += k;
      at += k;
    }
  }

  async deferred(t: DeferredTensor): Promise<void> {
    if (t.byteLength === 0) return;
    const rows = deferredRows(t);
    const rowBytes = t.byteLength / rows;
    let r = 0;
    while (r < rows) {
      let fit = Math.floor(this.room / rowBytes);
      if (fit === 0) {
        if (this.used > this.lead) {
          await this.flush();
          continue;
        }
        // A single row larger than a chunk: convert it on its own.
        const one = new Uint8Array(rowBytes);
        t.fill(one, r, r + 1);
        await this.bytes(one);
        r++;
        continue;
      }
      // Whole groups of 8 rows keep the transposes on their SIMD path (half-simd.ts): rather than a
      // sliver of under 8 rows at the end of a chunk, the tensor continues in the next one.
      if (fit < rows - r) {
        if (fit >= 8) fit -= fit % 8;
        else if (this.used > this.lead) {
          await this.flush();
          continue;
        }
      }
      fit = Math.min(fit, rows - r);
      const at = this.used;
      t.fill(this.cur.subarray(at, at + fit * rowBytes), r, r + fit);
      this.pos += fit * rowBytes;
      r += fit;
      if (this.room < rowBytes) await this.flush();
    }
  }

  /** Sends the current chunk and waits until the next buffer is free. */
  async flush(): Promise<void> {
    await this.send();
  }

  private send(): Promise<void> {
    const len = this.pos - this.base;
    const slot = this.ring[this.slot];
    if (len > 0) {
      const view = slot.buf.subarray(this.lead, this.lead + len);
      const at = this.base;
      slot.busy = Promise.all([writeAt(this.fh, view, at), this.hasher.update(view)]).then(() => undefined);
      // Rejections are collected by drain(); keep them from surfacing as unhandled meanwhile.
      slot.busy.catch(() => undefined);
    }
    this.slot = (this.slot + 1) % this.ring.length;
    const next = this.ring[this.slot];
    this.base = this.pos;
    this.lead = this.pos % 8;
    this.cur = next.buf;
    return next.busy;
  }

  /** Waits for every chunk in flight (and fails with the first error among them). */
  async drain(): Promise<void> {
    await Promise.all(this.ring.map((s) => s.busy));
  }
}
