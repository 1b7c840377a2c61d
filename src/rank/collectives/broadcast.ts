// Broadcast: the root sends its buffer to every other rank, which receives it in place.
import type { CollectiveOptions, CommArray } from '../types.js';
import { descriptor } from '../collective-check.js';
import { bytesOf, dtypeOf } from '../dtype.js';
import type { Comm } from './round.js';
import { checkRoot } from './slices.js';

export async function broadcast<T extends CommArray>(c: Comm, buf: T, root: number, o?: CollectiveOptions): Promise<T> {
  checkRoot(root, c.size, 'broadcast root');
  const rd = c.round(descriptor('broadcast', dtypeOf(buf, o?.dtype), undefined, root), 'broadcast', ` from rank ${root}`, o?.timeoutMs);
  const bytes = bytesOf(buf);
  if (c.rank === root) {
    for (let r = 0; r < c.size; r++) if (r !== root) rd.send(r, 0, bytes);
  } else rd.recv(root, 0, bytes);
  await rd.wait();
  return buf;
}
