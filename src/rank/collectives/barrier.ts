// Barrier: an empty message from every rank to every other, one hop (see all-reduce.ts for why direct).
import type { CollectiveOptions } from '../types.js';
import { descriptor } from '../collective-check.js';
import type { Comm } from './round.js';

const EMPTY = new Uint8Array(0);

export async function barrier(c: Comm, o?: CollectiveOptions): Promise<void> {
  const rd = c.round(descriptor('barrier'), 'barrier', '', o?.timeoutMs);
  for (let r = 0; r < c.size; r++) {
    if (r === c.rank) continue;
    rd.recv(r, 0);
    rd.send(r, 0, EMPTY);
  }
  await rd.wait();
}
