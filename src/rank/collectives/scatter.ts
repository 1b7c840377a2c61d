// scatter: the root sends piece r to rank r, which receives it into `into`.
import type { CollectiveOptions, CommArray } from '../types.js';
import { descriptor } from '../collective-check.js';
import { bytesOf, dtypeOf } from '../dtype.js';
import { CommError } from '../inbox.js';
import type { Comm } from './round.js';
import { checkRoot } from './slices.js';

export async function scatter<T extends CommArray>(c: Comm, pieces: T[] | undefined, root: number, into: T, o?: CollectiveOptions): Promise<T> {
  checkRoot(root, c.size, 'scatter root');
  const rd = c.round(descriptor('scatter', dtypeOf(into, o?.dtype), undefined, root), 'scatter', ` from rank ${root}`, o?.timeoutMs);
  if (c.rank === root) {
    if (!pieces || pieces.length !== c.size) throw new CommError(`${rd.label}: the root needs ${c.size} pieces, got ${pieces?.length ?? 0}`);
    pieces.forEach((p, r) => {
      if (p.length !== into.length) throw new CommError(`${rd.label}: piece ${r} has ${p.length} elements, \`like\` has ${into.length}`);
    });
    for (let r = 0; r < c.size; r++) if (r !== root) rd.send(r, 0, bytesOf(pieces[r]));
    into.set(pieces[root] as never);
  } else rd.recv(root, 0, bytesOf(into));
  await rd.wait();
  return into;
}
