// The collectives over a set of world ranks: the whole world (group 0) or a group from World.newGroup.
// Each call takes the next key of its group (../collective-check.ts), so groups that share ranks, and
// collectives in several groups at once, never mix messages; the algorithms are in ./collectives/.
import type { CollectiveOptions, CommArray, Group, ReduceOp } from './types.js';
import { CommError } from './inbox.js';
import { collectiveKey, MAX_GROUPS, SEQ_BITS } from './collective-check.js';
import { Round, type Comm, type Transport } from './collectives/round.js';
import type { ReduceBuffers } from './collectives/reduce-buffers.js';
import type { ShmAllReduce } from './shm-allreduce.js';
import { barrier } from './collectives/barrier.js';
import { broadcast } from './collectives/broadcast.js';
import { allReduce } from './collectives/all-reduce.js';
import { allGather } from './collectives/all-gather.js';
import { gather } from './collectives/gather.js';
import { scatter } from './collectives/scatter.js';
import { reduceScatter } from './collectives/reduce-scatter.js';
import { broadcastObject } from './collectives/broadcast-object.js';

const SEQ_MAX = 2 ** SEQ_BITS - 1;

/** Checks newGroup's argument against a world of `size`: distinct world ranks, at least one. */
export function checkGroupRanks(ranks: readonly number[], size: number, id: number): void {
  if (!Array.isArray(ranks) || ranks.length === 0) throw new CommError('newGroup: ranks must be a non-empty array of world ranks');
  for (const r of ranks) {
    if (!Number.isInteger(r) || r < 0 || r >= size) throw new CommError(`newGroup: rank ${r} is not in 0..${size - 1}`);
  }
  if (new Set(ranks).size !== ranks.length) throw new CommError(`newGroup: ranks ${ranks.join(', ')} name a rank twice`);
  if (id > MAX_GROUPS) throw new CommError(`newGroup: at most ${MAX_GROUPS} groups per world`);
}

export class PeerGroup implements Group, Comm {
  readonly rank: number;
  readonly size: number;
  private seq = 0;
  /** Large allReduce through shared memory: the whole world's group only, where every rank is local. */
  shm?: ShmAllReduce;
  /** While the world warms its collectives' paths when it starts (PeerWorld.warmPaths): every round is
   *  collective 0, which no user collective has, begun nowhere (its one barrier's messages then carry no
   *  descriptor to check against the allReduces before it under the same key), and the group's own
   *  numbering is left as it was (the user's first collective is #1). */
  warming = false;

  /** `buffers` makes the reductions' memory at the first reduction (its SIMD module costs a rank's start
   *  ~7 ms of CPU, and a world that never reduces needs none). */
  constructor(private t: Transport, private makeBuffers: () => ReduceBuffers, readonly id: number, readonly ranks: readonly number[],
    private worldRank: number) {
    this.rank = ranks.indexOf(worldRank);
    this.size = ranks.length;
  }

  get buffers(): ReduceBuffers { return this.makeBuffers(); }

  round(desc: number, name: string, detail: string | (() => string) = '', timeoutMs?: number): Round {
    if (this.rank < 0) {
      throw new CommError(`${name} in group ${this.id}: rank ${this.worldRank} is not a member (the group is world ranks ${this.ranks.join(', ')})`);
    }
    let a = 0;
    if (!this.warming) {
      this.seq = (this.seq % SEQ_MAX) + 1;
      a = collectiveKey(this.id, this.seq);
      this.t.begin(a, desc);
    }
    return new Round(this.t, this.ranks, a, name, detail, timeoutMs);
  }

  barrier(o?: CollectiveOptions): Promise<void> { return barrier(this, o); }
  broadcast<T extends CommArray>(buf: T, root: number, o?: CollectiveOptions): Promise<T> { return broadcast(this, buf, root, o); }
  allReduce<T extends CommArray>(buf: T, op?: ReduceOp, o?: CollectiveOptions): Promise<T> { return allReduce(this, buf, op, o); }
  allGather<T extends CommArray>(buf: T, o?: CollectiveOptions): Promise<T> { return allGather(this, buf, o); }
  gather<T extends CommArray>(buf: T, root: number, o?: CollectiveOptions): Promise<T | undefined> { return gather(this, buf, root, o); }
  scatter<T extends CommArray>(pieces: T[] | undefined, root: number, into: T, o?: CollectiveOptions): Promise<T> {
    return scatter(this, pieces, root, into, o);
  }
  reduceScatter<T extends CommArray>(buf: T, op?: ReduceOp, o?: CollectiveOptions): Promise<T> { return reduceScatter(this, buf, op, o); }
  broadcastObject<T = unknown>(value: T | undefined, root: number, o?: CollectiveOptions): Promise<T> { return broadcastObject(this, value, root, o); }
}
