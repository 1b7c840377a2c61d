// Worker threads that share the transposes of one weight-file chunk (half-simd.ts) with the main thread.
// Each worker instantiates the same wasm module on the same shared memory, so a job is six addresses and
// sizes: the chunk's destination rows are cut into column blocks, the workers take all but the last and
// the main thread the last. The hand-off is synchronous (Atomics.wait/notify on a shared control block),
// so a chunk's fill stays the plain function weight-convert.ts calls and no bytes are copied between
// threads. A transpose is memory-bound work in small tiles, the part of a build that grows with cores.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Export names of the transposes, indexed by the job's function number. */
export const TRANS_FNS = ['trans_bf16', 'trans_f16', 'trans4_bf16', 'trans4_f16'] as const;

// Control block, one 16-int slot per worker: [0] job sequence (the worker waits on it), [1] function
// (-1: stop), [2..7] the transpose's arguments, [8] 1 done / 2 failed, [9] sequence of the finished job.
const SLOT = 16;
const SEQ = 0, FN = 1, STATUS = 8, DONE = 9;

const WORKER = `
const { workerData } = require('node:worker_threads');
const { module, mem, ctl, slot, names } = workerData;
const ex = new WebAssembly.Instance(module, { env: { mem } }).exports;
const fns = names.map((n) => ex[n]);
const b = slot * ${SLOT};
let seen = 0;
for (;;) {
  Atomics.wait(ctl, b + ${SEQ}, seen);
  seen = Atomics.load(ctl, b + ${SEQ});
  const fn = ctl[b + ${FN}];
  if (fn < 0) break;
  let status = 1;
  try { fns[fn](ctl[b + 2], ctl[b + 3], ctl[b + 4], ctl[b + 5], ctl[b + 6], ctl[b + 7]); } catch { status = 2; }
  ctl[b + ${STATUS}] = status;
  Atomics.store(ctl, b + ${DONE}, seen);
  Atomics.notify(ctl, b + ${DONE});
}`;

/** Destination bytes of one thread's share of a chunk, at least (smaller shares cost more in hand-offs). */
export const MIN_SHARE_BYTES = 128 << 10;
/** A worker that has not finished its part of one chunk by then is taken for dead (hang guard). */
const STALL_MS = 120_000;

/**
 * Workers to start: TPRUN_BUILD_THREADS when set, else the cores this process may use less two (the
 * main thread, and the checksum worker and file writes), at most 7. 0 where the cores are few.
 */
export function transposeThreads(env: NodeJS.ProcessEnv = process.env): number {
  const set = env.TPRUN_BUILD_THREADS;
  if (set !== undefined && set !== '') {
    const n = Number(set);
    if (!Number.isInteger(n) || n < 0) throw new Error(`TPRUN_BUILD_THREADS=${set}: must be a whole number >= 0`);
    return Math.min(n, 32);
  }
  return Math.max(0, Math.min(7, availableParallelism() - 2));
}

/** Chunks whose transposes were shared with workers so far (tests check the pool was used). */
export const poolStats = { splitChunks: 0 };

export class TransposePool {
  private seq = 0;

  private constructor(private ctl: Int32Array, private workers: Worker[]) {}

  static start(module: WebAssembly.Module, mem: WebAssembly.Memory, n: number): TransposePool | undefined {
    if (n <= 0) return undefined;
    const ctl = new Int32Array(new SharedArrayBuffer(n * SLOT * 4));
    const workers = Array.from({ length: n }, (_, slot) => {
      const w = new Worker(WORKER, { eval: true, workerData: { module, mem, ctl, slot, names: TRANS_FNS } });
      w.unref(); // never what keeps a process alive
      return w;
    });
    return new TransposePool(ctl, workers);
  }

  /**
   * Destination rows [k0, k1) of a transpose (k0, k1 multiples of 8), cut into column blocks: workers
   * run fn on all but the last, `self` runs the last on this thread; returns when all are written.
   */
  run(fn: number, src: number, dst: number, rows: number, cols: number, k0: number, k1: number, self: (k0: number, k1: number, dst: number) => void): void {
    const blocks = (k1 - k0) / 8;
    const parts = Math.min(this.workers.length + 1, blocks, Math.max(1, Math.floor((k1 - k0) * rows * 2 / MIN_SHARE_BYTES)));
    if (parts <= 1) return self(k0, k1, dst);
    const seq = ++this.seq;
    poolStats.splitChunks++;
    const at = (p: number) => k0 + 8 * Math.floor((blocks * p) / parts);
    const rowBytes = rows * 2;
    for (let p = 0; p < parts - 1; p++) {
      const b = p * SLOT;
      // Each part writes from its own first row: dst advances by the rows before it.
      this.ctl.set([fn, src, (dst + (at(p) - k0) * rowBytes) | 0, rows, cols, at(p), at(p + 1)], b + FN);
      Atomics.store(this.ctl, b + SEQ, seq);
      Atomics.notify(this.ctl, b + SEQ);
    }
    self(at(parts - 1), k1, dst + (at(parts - 1) - k0) * rowBytes);
    const t0 = Date.now();
    for (let p = 0; p < parts - 1; p++) {
      const b = p * SLOT;
      while (Atomics.load(this.ctl, b + DONE) !== seq) {
        Atomics.wait(this.ctl, b + DONE, Atomics.load(this.ctl, b + DONE), 1000);
        if (Date.now() - t0 > STALL_MS) throw new Error(`transpose worker ${p} did not finish its part in ${STALL_MS / 1000} s`);
      }
      if (this.ctl[b + STATUS] !== 1) throw new Error(`transpose worker ${p} failed`);
    }
  }

  /** Ends the workers (each leaves its wait loop). */
  stop(): void {
    for (let p = 0; p < this.workers.length; p++) {
      const b = p * SLOT;
      this.ctl[b + FN] = -1;
      Atomics.store(this.ctl, b + SEQ, ++this.seq);
      Atomics.notify(this.ctl, b + SEQ);
    }
    this.workers = [];
  }
}
