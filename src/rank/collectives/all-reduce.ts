// allReduce, "direct" rather than a ring: every rank exchanges with every other in one hop. With R ranks
// each still moves (R-1)/R of the data per phase, as a ring would, but in one step of latency instead of
// R-1; and every rank reduces the contributions in rank order, so results are bit-identical on all ranks.
import type { CollectiveOptions, CommArray, CommDType, ReduceOp } from '../types.js';
import { descriptor } from '../collective-check.js';
import { bytesOf, dtypeOf, like, reduceInto } from '../dtype.js';
import type { Comm, Round } from './round.js';
import { checkOp, chunks, ELEM, sub } from './slices.js';

/** Up to this many bytes sent per rank, everyone sends everything to everyone (latency over bandwidth). */
const SMALL_BYTES = 64 * 1024;

/** allReduce's descriptors by dtype and op, made once: a small call is a few microseconds, and until V8 has
 *  optimized it (its first thousands of calls) each such helper costs a good part of a microsecond. */
const DESC: Partial<Record<CommDType, Partial<Record<ReduceOp, number>>>> = {};

/** Not async (bad arguments still reject): each async layer costs microtask turns on a latency-bound call. */
export function allReduce<T extends CommArray>(c: Comm, buf: T, op: ReduceOp = 'sum', o?: CollectiveOptions): Promise<T> {
  let dtype: CommDType;
  let rd: Round;
  let desc: number;
  try {
    dtype = dtypeOf(buf, o?.dtype);
    checkOp(op);
    desc = (DESC[dtype] ??= {})[op] ??= descriptor('allReduce', dtype, op);
    // The details only when an error names the call.
    rd = c.round(desc, 'allReduce', () => ` (${buf.length} x ${dtype})`, o?.timeoutMs);
  } catch (e) {
    return Promise.reject(e);
  }
  if (c.size === 1) return Promise.resolve(buf);
  const shm = c.shm;
  if (shm && shm.wants(buf.length)) {
    // Nothing queued ahead: a short call may be complete before it returns (ShmAllReduce.now).
    if (c.buffers.idle) {
      let r: T | Promise<T>;
      try {
        r = shm.now(buf, op, dtype, rd, desc, o?.timeoutMs);
      } catch (e) {
        return Promise.reject(e);
      }
      return r instanceof Promise ? c.buffers.serial(() => r) : Promise.resolve(r);
    }
    return c.buffers.serial(() => shm.run(buf, op, dtype, rd.a, desc, rd.what, o?.timeoutMs));
  }
  return c.buffers.serial(() => (buf.length * ELEM[dtype] * (c.size - 1) <= SMALL_BYTES || buf.length < c.size
    ? small(c, rd, buf, op, dtype) : large(c, rd, buf, op, dtype)));
}

async function small<T extends CommArray>(c: Comm, rd: Round, buf: T, op: ReduceOp, dtype: CommDType): Promise<T> {
  const R = c.size;
  const nbytes = buf.byteLength;
  const tmp = c.buffers.scratchBytes(nbytes * R);
  const sources: CommArray[] = [];
  for (let r = 0; r < R; r++) {
    if (r === c.rank) { sources.push(buf); continue; }
    const dst = tmp.subarray(r * nbytes, (r + 1) * nbytes);
    rd.recv(r, 0, dst);
    sources.push(like(buf, dst));
    rd.send(r, 0, bytesOf(buf));
  }
  await rd.wait(0);
  reduceInto(dtype, op, buf, sources);
  return buf;
}

/** Reduce-scatter (rank r reduces chunk r) then all-gather, both direct. */
async function large<T extends CommArray>(c: Comm, rd: Round, buf: T, op: ReduceOp, dtype: CommDType): Promise<T> {
  const R = c.size;
  const off = chunks(buf.length, R);
  const mine = sub(buf, off[c.rank], off[c.rank + 1]);
  const slots = c.buffers.slots(dtype, op, R, mine.byteLength);
  // The all-gather's receives are posted first, so peers' reduced chunks land in `buf` directly
  // whenever they come (a peer sends its chunk only after it has read all of ours from that place).
  for (let k = 1; k < R; k++) {
    const r = (c.rank + k) % R;
    rd.recv(r, 1, bytesOf(sub(buf, off[r], off[r + 1])));
    rd.recv(r, 0, slots[r]);
    rd.send(r, 0, bytesOf(sub(buf, off[r], off[r + 1])));
  }
  await rd.wait(0);
  c.buffers.reduceSlots(dtype, op, mine, slots, c.rank);
  for (let k = 1; k < R; k++) rd.send((c.rank + k) % R, 1, bytesOf(mine));
  await rd.wait(1);
  return buf;
}
