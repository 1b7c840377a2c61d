// A worker thread of weight-jobs.ts: opens the same lazy shard as the main thread (from its origin), and
// for each job makes rows of one engine weight with the same conversion code (weight-convert.ts), takes
// their CRC-32 while they are in cache, and writes them at their final offset in the weight file with
// positional writes. Reads, conversions, checksums and kernel copies thus all run on as many threads as
// there are workers; nothing but a job's few numbers and its CRC crosses between threads.

import { parentPort, workerData } from 'node:worker_threads';
import { isInputError } from '../core/errors.js';
import { type LazyOrigin, openLazyShard } from './lazy-shard.js';
import { type SimdSeed, chunkBuffers, engineWeight, engineWeightTransposed, plantSimd, seedStats } from './weight-convert.js';
import { type JobMessage, type JobReply, RowSteps, acquire, release } from './weight-jobs.js';
import { writeAtSync } from './positional-write.js';
import { wasmMapStats } from '../util/wasm-map.js';
import { crc32Impl } from '../util/fast-crc32.js';

const { origin, simd } = workerData as { origin: LazyOrigin; simd?: SimdSeed };
// Run from the CommonJS bundle (weight-jobs.ts workerFile), which has a __filename; an ES module has none.
const bundled = typeof __filename === 'string';
// The main thread's SIMD converter, before anything here would make its own.
if (simd) plantSimd(simd);
const { shard, close } = openLazyShard(origin);

/** The file being written: the main thread's descriptor (closed by it once every job is done) and write token. */
let fd = -1;
let lock: Int32Array;
// One buffer inside the SIMD memory when there is one: sources are read into it and converted in place.
let buf: Uint8Array = new Uint8Array(0);
let giveBack = () => {};

function lend(bytes: number): void {
  giveBack();
  const { bufs, release } = chunkBuffers(1, bytes);
  buf = bufs[0];
  giveBack = release;
}

function setFile(f: { fd: number; lock: Int32Array; chunkBytes: number }): void {
  fd = f.fd;
  lock = f.lock;
  if (buf.length < f.chunkBytes) lend(f.chunkBytes);
}

// The SIMD module and its tables are made now, while the worker waits for its file (the usual size).
lend(4 << 20);

/**
 * One chunk, under the file's write token (weight-jobs.ts: writers of one file take turns): the token
 * around positional-write.ts's loop, as the main thread's writeAll (weight-jobs.ts) is around its async
 * one. Named apart from positional-write.ts's writeAt, which it is not (that one takes no token).
 */
function writeInTurn(view: Uint8Array, pos: number): void {
  acquire(lock);
  try {
    writeAtSync(fd, view, pos);
  } finally {
    release(lock);
  }
}

function run(j: JobMessage): number {
  const t = shard.weights.get(j.weight);
  if (!t) throw new Error(`weight worker: the shard has no tensor ${j.weight}`);
  const d = j.transposed ? engineWeightTransposed(t, j.dtype, `tensor ${j.weight}`) : engineWeight(t, j.dtype, `tensor ${j.weight}`);
  const steps = new RowSteps(d, j.r0, j.r1, buf);
  for (const { view, at } of steps) writeInTurn(view, j.offset + at);
  return steps.crc;
}

parentPort!.on('message', (j: JobMessage | { file: Parameters<typeof setFile>[0] } | null) => {
  if (j !== null && 'file' in j) return setFile(j.file);
  if (j === null) {
    giveBack();
    close();
    parentPort!.close();
    return;
  }
  let reply: JobReply;
  try {
    const windows = wasmMapStats.windows;
    reply = { id: j.id, crc: run(j), seeded: seedStats.planted > 0, windows: wasmMapStats.windows - windows, crcImpl: crc32Impl(), bundled };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException)?.code;
    reply = { id: j.id, error: String((e as Error)?.message ?? e), input: isInputError(e), ...(typeof code === 'string' ? { code } : {}) };
  }
  parentPort!.postMessage(reply);
});
