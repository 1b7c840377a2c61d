// allGather: every rank sends its piece to every other, each received straight into its place in the result.
import type { CollectiveOptions, CommArray } from '../types.js';
import { descriptor } from '../collective-check.js';
import { bytesOf, dtypeOf } from '../dtype.js';
import type { Comm } from './round.js';
import { alloc, sub } from './slices.js';

export async function allGather<T extends CommArray>(c: Comm, buf: T, o?: CollectiveOptions): Promise<T> {
  const rd = c.round(descriptor('allGather', dtypeOf(buf, o?.dtype)), 'allGather', '', o?.timeoutMs);
  const n = buf.length;
  const out = alloc(buf, n * c.size);
  out.set(buf as never, c.rank * n);
  for (let r = 0; r < c.size; r++) {
    if (r === c.rank) continue;
    rd.recv(r, 0, bytesOf(sub(out, r * n, (r + 1) * n)));
    rd.send(r, 0, bytesOf(buf));
  }
  await rd.wait();
  return out;
}
