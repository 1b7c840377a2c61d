// A world of one: every collective is a local copy, and a message to oneself waits in a queue.
import { pack } from 'msgpackr/pack'; // the pure-JS builds (see rendezvous.ts)
import { unpack } from 'msgpackr/unpack';
import type { CloseOptions, CollectiveOptions, CommArray, Group, ReduceOp, World, WorldIdentity } from './types.js';
import { CommError } from './inbox.js';
import { bytesOf, dtypeOf } from './dtype.js';
import { checkRoot } from './collectives/slices.js';
import { checkGroupRanks } from './group.js';

export class LocalWorld implements World, Group {
  readonly rank = 0;
  readonly size = 1;
  readonly localRank = 0;
  readonly localSize = 1;
  readonly nodeRank = 0;
  readonly ranks = [0];
  readonly source: string;
  private p2p = new Map<number, Uint8Array[]>();
  private groups = 0;
  constructor(id: WorldIdentity) {
    this.source = id.source;
  }
  async barrier(): Promise<void> {}
  async broadcast<T extends CommArray>(buf: T, root: number): Promise<T> { checkRoot(root, 1); return buf; }
  async allReduce<T extends CommArray>(buf: T, _op?: ReduceOp, o?: CollectiveOptions): Promise<T> { dtypeOf(buf, o?.dtype); return buf; }
  async allGather<T extends CommArray>(buf: T): Promise<T> { return buf.slice() as T; }
  async gather<T extends CommArray>(buf: T, root: number): Promise<T | undefined> { checkRoot(root, 1); return buf.slice() as T; }
  async scatter<T extends CommArray>(pieces: T[] | undefined, root: number, like: T): Promise<T> {
    checkRoot(root, 1);
    if (!pieces || pieces.length !== 1 || pieces[0].length !== like.length) throw new CommError('scatter at the root needs one piece per rank, each as long as `like`');
    like.set(pieces[0] as never);
    return like;
  }
  async reduceScatter<T extends CommArray>(buf: T): Promise<T> { return buf.slice() as T; }
  async send(buf: CommArray, dst: number, tag = 0): Promise<void> {
    checkRoot(dst, 1);
    const q = this.p2p.get(tag) ?? [];
    q.push(bytesOf(buf).slice());
    this.p2p.set(tag, q);
  }
  async recv<T extends CommArray = Uint8Array>(src: number, tag = 0, into?: T): Promise<T> {
    checkRoot(src, 1);
    const m = this.p2p.get(tag)?.shift();
    if (!m) throw new CommError(`recv from rank 0 tag ${tag} in a world of one: nothing was sent (it would wait forever)`);
    if (!into) return m as unknown as T;
    if (into.byteLength !== m.byteLength) throw new CommError(`rank 0 sent ${m.byteLength} bytes where ${into.byteLength} were expected`);
    bytesOf(into).set(m);
    return into;
  }
  async sendObject(value: unknown, dst: number, tag = 0): Promise<void> { await this.send(pack(value), dst, tag + 0x20000000); }
  async recvObject<T = unknown>(src: number, tag = 0): Promise<T> { return unpack(await this.recv(src, tag + 0x20000000)) as T; }
  async broadcastObject<T = unknown>(value: T | undefined, root: number): Promise<T> { checkRoot(root, 1); return value as T; }
  /** The only group a world of one has is itself. */
  newGroup(ranks: readonly number[]): Group {
    checkGroupRanks(ranks, 1, this.groups + 1);
    this.groups++;
    return this;
  }
  async close(_opts?: CloseOptions): Promise<void> {}
}
