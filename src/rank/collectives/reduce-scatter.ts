// reduceScatter: rank r receives everyone's chunk r and reduces it in rank order (bit-identical everywhere).
import type { CollectiveOptions, CommArray, ReduceOp } from '../types.js';
import { descriptor } from '../collective-check.js';
import { bytesOf, dtypeOf } from '../dtype.js';
import { CommError } from '../inbox.js';
import type { Comm } from './round.js';
import { checkOp, sub } from './slices.js';

export async function reduceScatter<T extends CommArray>(c: Comm, buf: T, op: ReduceOp = 'sum', o?: CollectiveOptions): Promise<T> {
  const dtype = dtypeOf(buf, o?.dtype);
  checkOp(op);
  if (buf.length % c.size !== 0) throw new CommError(`reduceScatter: length ${buf.length} does not divide by the world size ${c.size}`);
  const desc = descriptor('reduceScatter', dtype, op);
  const rd = c.round(desc, 'reduceScatter', ` (${buf.length} x ${dtype})`, o?.timeoutMs);
  const R = c.size;
  const k = buf.length / R;
  const shm = c.shm;
  // Same machine: through the areas (../shm-allreduce.ts), which keep every call in one order with allReduce's.
  if (shm && R > 1 && shm.wants(k)) return c.buffers.serial(() => shm.reduceScatter(buf, op, dtype, rd.a, desc, rd.what, o?.timeoutMs));
  return c.buffers.serial(async () => {
    const out = sub(buf, c.rank * k, (c.rank + 1) * k).slice() as T;
    if (R === 1) return out;
    const slots = c.buffers.slots(dtype, op, R, out.byteLength);
    for (let j = 1; j < R; j++) {
      const r = (c.rank + j) % R;
      rd.recv(r, 0, slots[r]);
      rd.send(r, 0, bytesOf(sub(buf, r * k, (r + 1) * k)));
    }
    await rd.wait(0);
    c.buffers.reduceSlots(dtype, op, out, slots, c.rank);
    return out;
  });
}
