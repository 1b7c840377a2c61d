// gather: every rank sends its piece to the root, which receives each straight into its place.
import type { CollectiveOptions, CommArray } from '../types.js';
import { descriptor } from '../collective-check.js';
import { bytesOf, dtypeOf } from '../dtype.js';
import type { Comm } from './round.js';
import { alloc, checkRoot, sub } from './slices.js';

export async function gather<T extends CommArray>(c: Comm, buf: T, root: number, o?: CollectiveOptions): Promise<T | undefined> {
  checkRoot(root, c.size, 'gather root');
  const rd = c.round(descriptor('gather', dtypeOf(buf, o?.dtype), undefined, root), 'gather', ` to rank ${root}`, o?.timeoutMs);
  const n = buf.length;
  if (c.rank !== root) {
    rd.send(root, 0, bytesOf(buf));
    await rd.wait();
    return undefined;
  }
  const out = alloc(buf, n * c.size);
  out.set(buf as never, root * n);
  for (let r = 0; r < c.size; r++) if (r !== root) rd.recv(r, 0, bytesOf(sub(out, r * n, (r + 1) * n)));
  await rd.wait();
  return out;
}
