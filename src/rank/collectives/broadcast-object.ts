// broadcastObject: the root's value as msgpack to every other rank (the receivers learn its size from it).
import { pack } from 'msgpackr/pack'; // the pure-JS builds (see rendezvous.ts)
import { unpack } from 'msgpackr/unpack';
import type { CollectiveOptions } from '../types.js';
import { descriptor } from '../collective-check.js';
import type { Comm } from './round.js';
import { checkRoot } from './slices.js';

export async function broadcastObject<T = unknown>(c: Comm, value: T | undefined, root: number, o?: CollectiveOptions): Promise<T> {
  checkRoot(root, c.size, 'broadcast root');
  const rd = c.round(descriptor('broadcastObject', undefined, undefined, root), 'broadcastObject', ` from rank ${root}`, o?.timeoutMs);
  if (c.rank === root) {
    const bytes = pack(value);
    for (let r = 0; r < c.size; r++) if (r !== root) rd.send(r, 0, bytes);
    await rd.wait();
    return value as T;
  }
  rd.recv(root, 0);
  const [bytes] = await rd.wait();
  return unpack(bytes) as T;
}
