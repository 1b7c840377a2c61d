// Memory the reductions (allReduce, reduceScatter) receive into and reduce in, shared by the world and its
// groups: one scratch buffer that grows to the largest message, and the WebAssembly SIMD arena (../simd.ts).
// Because it is shared, reductions run one at a time (`serial`).

import type { CommArray, CommDType, ReduceOp } from '../types.js';
import { bytesOf, like, reduceInto } from '../dtype.js';
import { SimdArena } from '../simd.js';
import { ELEM } from './slices.js';

export class ReduceBuffers {
  private scratch = new ArrayBuffer(0);
  /** Made at the first reduction through these buffers: a world whose reductions all go through the
   *  shared-memory areas (../shm-allreduce.ts) never needs it. */
  private arenaMade?: SimdArena | null;
  private get arena(): SimdArena | undefined {
    if (this.arenaMade === undefined) this.arenaMade = SimdArena.create() ?? null;
    return this.arenaMade ?? undefined;
  }
  private busy?: Promise<void>;

  scratchBytes(n: number): Uint8Array {
    if (this.scratch.byteLength < n) this.scratch = new ArrayBuffer(Math.max(n, this.scratch.byteLength * 2));
    return new Uint8Array(this.scratch, 0, n);
  }

  /**
   * Two reductions must not overlap in this memory (Promise.all of two allReduces is fine: the second
   * starts when the first ends). Their keys are taken at call time, before this, so the pairing with
   * other ranks follows call order as for every other collective.
   */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.busy;
    const run = prev ? prev.then(fn) : fn();
    // Cleared in the first reaction to `run`, before its caller's own await resumes: a caller that
    // awaits each call in turn finds the buffers idle again (the synchronous path of ../shm-allreduce.ts).
    const tail: Promise<void> = run.then(() => { if (this.busy === tail) this.busy = undefined; }, () => { if (this.busy === tail) this.busy = undefined; });
    this.busy = tail;
    return run;
  }

  /** No reduction is running or queued. */
  get idle(): boolean {
    return this.busy === undefined;
  }

  /** R receive slots of `bytes` each for a reduction (slot `me` is for our own contribution). */
  slots(dtype: CommDType, op: ReduceOp, R: number, bytes: number): Uint8Array[] {
    if (this.arena && bytes >= 16384 && SimdArena.supports(dtype, op)) return this.arena.slots(R, bytes);
    const stride = Math.ceil(bytes / 16) * 16;
    const tmp = this.scratchBytes(stride * R);
    return Array.from({ length: R }, (_, r) => tmp.subarray(r * stride, r * stride + bytes));
  }

  /** out = slot 0 op slot 1 op ... (rank order, so every rank gets the same bits), our own part taken from `out`. */
  reduceSlots(dtype: CommDType, op: ReduceOp, out: CommArray, slots: Uint8Array[], me: number): void {
    const own = bytesOf(out);
    if (this.arena && slots[0].buffer === this.arena.mem.buffer) {
      // Block by block, so our copy-in, the vector loop and the copy-out meet in cache.
      const B = 128 * 1024;
      for (let o = 0; o < own.byteLength; o += B) {
        const e = Math.min(own.byteLength, o + B);
        slots[me].set(own.subarray(o, e), o);
        this.arena.reduce(dtype, op, slots.map((sl) => sl.subarray(o, e)), ELEM[dtype]);
        own.set(slots[0].subarray(o, e), o);
      }
      return;
    }
    reduceInto(dtype, op, out, slots.map((s, r) => (r === me ? out : like(out, s))));
  }
}
