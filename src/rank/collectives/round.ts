// The point-to-point interface every collective algorithm in this folder is written against, so that the
// algorithms know nothing of sockets, shared memory or liveness (gloo's split of algorithms from its
// transport, gloo/allreduce.cc over gloo/transport/). A world implements Transport over world ranks; a
// Comm gives an algorithm its ranks (the world's, or a group's) and hands out one Round per collective.

import type { ReduceBuffers } from './reduce-buffers.js';
import type { ShmAllReduce } from '../shm-allreduce.js';
import { keyName } from '../collective-check.js';

/** A send in flight: done once its data left (the caller may then reuse the buffer). */
export interface Ticket { done: boolean; dst: number }

/** Messages are keyed (source world rank, a, b): `a` names the collective, `b` its phase. */
export interface Transport {
  /** Collective `a` begins, described by `desc` (../collective-check.ts): early messages for it must agree. */
  begin(a: number, desc: number): void;
  /** Expect message (src, a, b), written straight into `into` when given. */
  post(src: number, a: number, b: number, into?: Uint8Array): void;
  put(dst: number, a: number, b: number, data: Uint8Array, tickets: Ticket[]): void;
  /** Until every receive completed and every ticket is done; fails naming the ranks missing (and forgets the receives). */
  complete(what: string, recvs: [number, number, number][], tickets: Ticket[], timeoutMs?: number): Promise<void>;
  take(src: number, a: number, b: number): Uint8Array;
  forget(src: number, a: number, b: number): void;
}

/** What an algorithm runs on: its own index and size in the group, and a Round per collective call. */
export interface Comm {
  readonly rank: number;
  readonly size: number;
  /** Must be called synchronously at call time: the round's key follows call order on every rank. */
  round(desc: number, name: string, detail?: string | (() => string), timeoutMs?: number): Round;
  readonly buffers: ReduceBuffers;
  /** Where the group has it: allReduce through shared-memory areas instead of messages (../shm-allreduce.ts). */
  readonly shm?: ShmAllReduce;
}

/** One collective call: its sends and receives by group rank and phase, and the waits for them. */
export class Round {
  private recvs: [number, number, number][] = [];
  private tickets: Ticket[] = [];

  constructor(private t: Transport, private ranks: readonly number[], readonly a: number, private name: string,
    private detail: string | (() => string) = '', private timeoutMs?: number) {}

  /** What errors call this collective: "allReduce #7". Built when asked: a string per call is a good part
   *  of a small allReduce that completes without waiting. */
  get label(): string {
    return `${this.name} ${keyName(this.a)}`;
  }

  /** The label and its details (" (n x float32)"), which may be given as a function that makes them. */
  get what(): string {
    return this.label + (typeof this.detail === 'string' ? this.detail : this.detail());
  }

  recv(src: number, phase: number, into?: Uint8Array): void {
    const w = this.ranks[src];
    this.t.post(w, this.a, phase, into);
    this.recvs.push([w, this.a, phase]);
  }

  send(dst: number, phase: number, data: Uint8Array): void {
    this.t.put(this.ranks[dst], this.a, phase, data, this.tickets);
  }

  /** Waits for the receives of `phase` and every send so far; the received bytes, in posting order. */
  wait(phase = 0): Promise<Uint8Array[]> {
    // Not async: each async layer costs microtask turns, and a small allReduce is only a few microseconds.
    let now = this.recvs;
    if (this.recvs.some((r) => r[2] !== phase)) {
      now = this.recvs.filter((r) => r[2] === phase);
      this.recvs = this.recvs.filter((r) => r[2] !== phase);
    } else this.recvs = [];
    return this.t.complete(this.what, now, this.tickets, this.timeoutMs).then(() => now.map(([s, a, b]) => this.t.take(s, a, b)), (e) => {
      // Receives of later phases must not be written into their buffers after we gave up either.
      for (const [s, a, b] of this.recvs) this.t.forget(s, a, b);
      throw e;
    });
  }
}
