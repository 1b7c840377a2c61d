// The contract every rank-level consumer (convert, build, generate) codes against.
// Implemented by src/rank/peer-world.ts and local-world.ts; kept separate so model code depends on the shape, not the transport.

/** Element types that collectives move; float16/bfloat16 travel as Uint16Array with an explicit dtype. */
export type CommDType = 'float32' | 'float64' | 'int32' | 'uint8' | 'int8' | 'float16' | 'bfloat16';
export type ReduceOp = 'sum' | 'max' | 'min';
export type CommArray = Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array | Uint16Array;

export interface CollectiveOptions {
  /** Required for Uint16Array (float16 | bfloat16); inferred otherwise. */
  dtype?: CommDType;
  /** Milliseconds before the collective fails naming the ranks that did not arrive. */
  timeoutMs?: number;
}

export interface CloseOptions {
  abort?: boolean;
}

export interface WorldIdentity {
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  nodeRank: number;
  /** Which launcher set the identity: 'tprun' | 'openmpi' | 'slurm' | 'pmi' | 'single'. */
  source: string;
}

/** The collectives, over the whole world or over a group of its ranks (see World.newGroup). */
export interface Collectives {
  barrier(opts?: CollectiveOptions): Promise<void>;
  /** In place on every rank: root's contents are copied into `buf` elsewhere. Returns `buf`. */
  broadcast<T extends CommArray>(buf: T, root: number, opts?: CollectiveOptions): Promise<T>;
  /** In place: every rank ends with the elementwise reduction. Returns `buf`. */
  allReduce<T extends CommArray>(buf: T, op?: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  /** Rank r's piece lands at offset r*buf.length of the result (same length on every rank). */
  allGather<T extends CommArray>(buf: T, opts?: CollectiveOptions): Promise<T>;
  /** On root: concatenation in rank order; elsewhere: undefined. */
  gather<T extends CommArray>(buf: T, root: number, opts?: CollectiveOptions): Promise<T | undefined>;
  /** Root passes one piece per rank (equal lengths); every rank gets its piece. */
  scatter<T extends CommArray>(pieces: T[] | undefined, root: number, like: T, opts?: CollectiveOptions): Promise<T>;
  /** buf.length must divide by size; rank r gets the reduction of chunk r. */
  reduceScatter<T extends CommArray>(buf: T, op?: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  broadcastObject<T = unknown>(value: T | undefined, root: number, opts?: CollectiveOptions): Promise<T>;
}

/**
 * A subset of the world's ranks with the same collectives, as torch.distributed.new_group gives. Ranks,
 * roots and result order are the group's: `rank` is this rank's index in `ranks` (-1 outside the group,
 * where every collective is refused).
 */
export interface Group extends Collectives {
  readonly rank: number;
  readonly size: number;
  /** The members' world ranks, in group order. */
  readonly ranks: readonly number[];
}

export interface World extends WorldIdentity, Collectives {
  send(buf: CommArray, dst: number, tag?: number): Promise<void>;
  /** Receives into `into` when given (length must match), else a fresh Uint8Array view of the bytes. */
  recv<T extends CommArray = Uint8Array>(src: number, tag?: number, into?: T, opts?: CollectiveOptions): Promise<T>;
  /** Structured (msgpack) point-to-point, for configs, plans and small metadata. */
  sendObject(value: unknown, dst: number, tag?: number): Promise<void>;
  recvObject<T = unknown>(src: number, tag?: number, opts?: CollectiveOptions): Promise<T>;
  /**
   * A group of these world ranks (torch.distributed.new_group): every rank of the world calls newGroup
   * with the same ranks in the same order, members or not, so that all agree on which group is which.
   */
  newGroup(ranks: readonly number[]): Group;
  /** Graceful by default (waits, bounded, for the peers' goodbyes); `abort` leaves at once (a failing rank). */
  close(opts?: CloseOptions): Promise<void>;
}
