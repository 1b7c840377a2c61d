// A world of two or more ranks: its lifecycle (links up, goodbyes, abort) and its point-to-point
// messages. Collectives are algorithms over the Transport it implements (./collectives/), run through
// group 0 (every rank) or through groups from newGroup (./group.ts).
import { pack } from 'msgpackr/pack'; // the pure-JS builds (see rendezvous.ts)
import { unpack } from 'msgpackr/unpack';
import type { CloseOptions, CollectiveOptions, CommArray, Group, ReduceOp, World, WorldIdentity } from './types.js';
import type { Env } from './identity.js';
import { CommError, Inbox, KIND_OBJ, KIND_P2P, NOTICE_PHASE, RefusedMessage } from './inbox.js';

/** A notice's payload: its descriptor travels in the piece header; a byte so it is a message like any other. */
const NOTICE_BYTES = new Uint8Array(1);
import { bytesOf } from './dtype.js';
import { IdleWatch } from './idle.js';
import { Links } from './links.js';
import { ranksOutnumberCpus } from './affinity.js';
import { Progress } from './progress.js';
import { checkGroupRanks, PeerGroup } from './group.js';
import { checkRoot } from './collectives/slices.js';
import { ReduceBuffers } from './collectives/reduce-buffers.js';
import { type ShmAllReduce, worldStartsEarly } from './shm-allreduce.js';
import type { Ticket, Transport } from './collectives/round.js';
import { onOff } from '../util/env.js';

const NONE: number[] = [];
/** Elements of the world's warm-up allReduces (warmPaths): any length of one exchange takes the same
 *  functions, and a short one keeps the warm-up's copies small. */
const WARM_LEN = 64;

export class PeerWorld implements World, Transport {
  readonly rank: number;
  readonly size: number;
  readonly localRank: number;
  readonly localSize: number;
  readonly nodeRank: number;
  readonly source: string;
  private inbox: Inbox;
  private links: Links;
  private p: Progress;
  /** Peers that acknowledged our goodbye (close waits for these). */
  private peersAckedOurBye = new Set<number>();
  /** Peers whose goodbye we acknowledged (they need no goodbye of ours), and whether we said ours. */
  private weAckedTheirBye = new Set<number>();
  private saidBye = false;
  /** Shared by the world's groups, made at the first reduction (see PeerGroup). */
  private buffersMade?: ReduceBuffers;
  private buffers = () => (this.buffersMade ??= new ReduceBuffers());
  /** Group 0: every rank, what the world's own collectives run through. */
  private all: PeerGroup;
  private groups = 0;
  private sendSeq = new Map<string, number>();
  private recvSeq = new Map<string, number>();
  private idle: IdleWatch;
  private log = (m: string) => process.stderr.write(m + '\n');
  /** Measured before links.open binds this rank to its share of the cores (after it, it would say 1). */
  private oversubscribed: boolean;

  constructor(id: WorldIdentity, private timeoutMs: number, maxBytes: number, spinUs: number | undefined) {
    ({ rank: this.rank, size: this.size, localRank: this.localRank, localSize: this.localSize, nodeRank: this.nodeRank, source: this.source } = id);
    this.inbox = new Inbox(id.size, maxBytes, id.rank);
    this.inbox.onDeliver = () => this.p.kick();
    this.links = new Links(id, this.inbox, {
      bye: (r) => {
        this.p.gone.set(r, { at: 0, why: `rank ${r} closed its world` });
        // r needs our goodbye or an ack, not both: a message r no longer waits for would sit in our
        // socket after r closed and hold this process's exit for the socket's linger.
        if (!this.p.closed && !this.saidBye) { this.links.zlinks[r]?.byeAck(); this.weAckedTheirBye.add(r); }
        this.p.kick();
      },
      byeAck: (r) => { this.peersAckedOurBye.add(r); this.p.kick(); },
      disconnect: (r) => {
        if (this.p.closed || this.p.gone.has(r)) return;
        this.p.gone.set(r, { at: Date.now(), why: `rank ${r} disconnected (it exited or crashed)` });
        this.p.kick();
      },
      wake: () => this.p.kick(),
      fail: (e) => this.p.fail(e),
      log: this.log,
    });
    // Busy-polling shared memory is what makes small messages fast, but only when every rank has a
    // core of its own; oversubscribed, spinning would steal the time the peer needs to send. Judged
    // against the job's CPUs, not this rank's mask: ranks a launcher bound to a core each have one.
    this.oversubscribed = ranksOutnumberCpus(id.localSize, id.source);
    spinUs ??= this.oversubscribed ? 0 : 10_000;
    this.p = new Progress(id.rank, this.links, BigInt(Math.round(spinUs * 1000)), timeoutMs);
    this.idle = new IdleWatch(() => this.p.waiting > 0 || !this.links.idle);
    this.all = new PeerGroup(this, this.buffers, 0, Array.from({ length: id.size }, (_, r) => r), id.rank);
  }

  async start(env: Env): Promise<void> {
    let linked = false;
    let implicitClose = true;
    try {
      // Where the allReduce areas are set up early (./shm-allreduce.ts, earlySetUp), that starts while this rank waits for its peers.
      await this.links.open(env, this.timeoutMs, worldStartsEarly(this.localSize, this.oversubscribed));
      linked = true;
      // Inside the try, once linked: a refusal closes the links below, so the peers learn at once.
      implicitClose = onOff('TPRUN_IMPLICIT_CLOSE', env);
      this.all.shm = this.links.arPlan?.start({
        wait: (what, missing, t) => this.p.waitFor(what, missing, t),
        nudge: () => { for (const l of this.links.shmList) l.nudge(); },
        notice: (ranks, a) => { for (const r of ranks) this.put(r, a, NOTICE_PHASE, NOTICE_BYTES, []); },
        oversubscribed: this.oversubscribed,
      });
      await this.all.shm?.warm(this.timeoutMs);
      await this.warmPaths();
    } catch (e) {
      // A program may catch this and go on: links left open would hold its process (their sockets) and
      // leave its peers waiting the whole timeout for a rank that will never call. Closed as a failing
      // rank closes (goodbye, sockets, nothing waited for), the peers fail at once naming this rank.
      // (links.open closes what it opened itself when it fails.)
      if (linked) await this.close({ abort: true }).catch(() => undefined);
      this.p.closed = true;
      throw e;
    }
    this.idle.start(() => {
      if (this.p.closed) return;
      void this.close().catch((e: Error) => {
        this.log(`tprun: ${e.message}`);
        process.exitCode ||= 1;
      });
    }, implicitClose);
  }

  /**
   * After the areas' first exchange, where every rank ran it: ShmAllReduce.warmCalls small float32 sums
   * through the path a user's allReduce takes (this method, the group's round, the collective, the areas'
   * call), then one barrier, as collective 0, so that a fresh process's first calls do not run that
   * JavaScript cold (./shm-allreduce.ts, WARM_CALLS). The barrier too: a cold one lets its ranks leave it
   * far apart, which the first allReduce after it waits out (docs/performance.md). A few of the
   * first sums change length, so that a call of a new shape, which the user's first call is, has run too.
   * One barrier only: a second under the same key could meet the first's message still unread.
   */
  private async warmPaths(): Promise<void> {
    const shm = this.all.shm;
    if (!shm?.warmed || shm.warmCalls === 0) return;
    const bufs = [new Float32Array(WARM_LEN), new Float32Array(WARM_LEN + 1)];
    this.all.warming = true;
    try {
      for (let i = 0; i < shm.warmCalls; i++) await this.allReduce(bufs[i < 8 ? i & 1 : 0]);
      await this.barrier();
    } finally {
      this.all.warming = false;
    }
  }

  // ---- the Transport the collectives run on ----

  begin(a: number, desc: number): void {
    try {
      this.inbox.begin(a, desc);
    } catch (e) {
      this.p.fatal ??= e as Error; // the ranks' collectives no longer line up: nothing after this can work
      this.p.fatalShown = true;
      throw e;
    }
  }

  post(src: number, a: number, b: number, into?: Uint8Array): void { this.inbox.post(src, a, b, into); }
  take(src: number, a: number, b: number): Uint8Array { return this.inbox.take(src, a, b); }
  forget(src: number, a: number, b: number): void { this.inbox.forget(src, a, b); }

  put(dst: number, a: number, b: number, data: Uint8Array, tickets: Ticket[]): void {
    this.links.put(dst, a, b, data, tickets, this.inbox.descOf(a));
  }

  /** `untouched`: told of each receive given up before any of its message came. */
  async complete(what: string, recvs: [number, number, number][], tickets: Ticket[], timeoutMs?: number,
    untouched?: (src: number, a: number, b: number) => void): Promise<void> {
    try {
      await this.p.waitFor(what, () => {
        // Called in the spin loop: allocate only when something is missing.
        let miss: Set<number> | undefined;
        for (const [src, a, b] of recvs) if (!this.inbox.done(src, a, b)) (miss ??= new Set()).add(src);
        for (const t of tickets) if (!t.done) (miss ??= new Set()).add(t.dst);
        return miss ? [...miss].sort((x, y) => x - y) : NONE;
      }, timeoutMs);
    } catch (e) {
      for (const [src, a, b] of recvs) if (this.inbox.forget(src, a, b)) untouched?.(src, a, b);
      if (!(e instanceof RefusedMessage)) throw e;
      const failed = new CommError(`${what} failed on rank ${this.rank}: ${e.message}`);
      // A collective's ranks no longer line up; a refused point-to-point message was dropped whole, and the
      // sequences still pair what follows.
      if (e.collective) {
        this.p.fatal ??= failed;
        this.p.fatalShown = true;
      }
      throw failed;
    }
  }

  // ---- collectives: the world's own group ----

  barrier(o?: CollectiveOptions): Promise<void> { return this.all.barrier(o); }
  broadcast<T extends CommArray>(buf: T, root: number, o?: CollectiveOptions): Promise<T> { return this.all.broadcast(buf, root, o); }
  allReduce<T extends CommArray>(buf: T, op?: ReduceOp, o?: CollectiveOptions): Promise<T> { return this.all.allReduce(buf, op, o); }
  allGather<T extends CommArray>(buf: T, o?: CollectiveOptions): Promise<T> { return this.all.allGather(buf, o); }
  gather<T extends CommArray>(buf: T, root: number, o?: CollectiveOptions): Promise<T | undefined> { return this.all.gather(buf, root, o); }
  scatter<T extends CommArray>(pieces: T[] | undefined, root: number, into: T, o?: CollectiveOptions): Promise<T> {
    return this.all.scatter(pieces, root, into, o);
  }
  reduceScatter<T extends CommArray>(buf: T, op?: ReduceOp, o?: CollectiveOptions): Promise<T> { return this.all.reduceScatter(buf, op, o); }
  broadcastObject<T = unknown>(value: T | undefined, root: number, o?: CollectiveOptions): Promise<T> { return this.all.broadcastObject(value, root, o); }

  newGroup(ranks: readonly number[]): Group {
    checkGroupRanks(ranks, this.size, this.groups + 1);
    return new PeerGroup(this, this.buffers, ++this.groups, [...ranks], this.rank);
  }

  // ---- point to point: keyed by (peer, kind, tag) and a per-key sequence, so messages pair in order ----

  private static seqKey = (peer: number, kind: number, tag: number) => `${peer}:${kind}:${tag}`;

  private p2pSeq(map: Map<string, number>, peer: number, kind: number, tag: number): number {
    const k = PeerWorld.seqKey(peer, kind, tag);
    const v = (map.get(k) ?? 0) + 1;
    map.set(k, v);
    return v % 2097152;
  }

  private checkTag(tag: number): void {
    if (!Number.isInteger(tag) || tag < 0 || tag >= 0x40000000) throw new CommError(`tag ${tag} is not in 0..2^30-1`);
  }

  send(buf: CommArray, dst: number, tag = 0): Promise<void> {
    return this.sendKind(bytesOf(buf), dst, KIND_P2P, tag);
  }

  private async sendKind(bytes: Uint8Array, dst: number, kind: number, tag: number): Promise<void> {
    checkRoot(dst, this.size, 'destination rank');
    this.checkTag(tag);
    const b = this.p2pSeq(this.sendSeq, dst, kind, tag);
    if (dst === this.rank) {
      // To self: hand a copy to our own inbox.
      const h = { a: kind + tag, b, total: bytes.byteLength, off: 0, len: bytes.byteLength };
      this.inbox.target(this.rank, h)?.set(bytes);
      this.inbox.landed(this.rank, h);
      return;
    }
    const tickets: Ticket[] = [];
    this.put(dst, kind + tag, b, bytes, tickets);
    await this.complete(`send to rank ${dst} (tag ${tag})`, [], tickets);
  }

  async recv<T extends CommArray = Uint8Array>(src: number, tag = 0, into?: T, o?: CollectiveOptions): Promise<T> {
    const bytes = await this.recvKind(src, KIND_P2P, tag, into ? bytesOf(into) : undefined, o?.timeoutMs);
    return (into ?? bytes) as T;
  }

  private async recvKind(src: number, kind: number, tag: number, into?: Uint8Array, timeoutMs?: number): Promise<Uint8Array> {
    checkRoot(src, this.size, 'source rank');
    this.checkTag(tag);
    const b = this.p2pSeq(this.recvSeq, src, kind, tag);
    this.inbox.post(src, kind + tag, b, into);
    // A receive given up before any of its message came (its timeoutMs) hands its number back, where no
    // later receive took one: a retry then pairs with that message, not the sender's next.
    const giveBack = () => {
      const k = PeerWorld.seqKey(src, kind, tag);
      const v = this.recvSeq.get(k)!;
      if (v % 2097152 === b) this.recvSeq.set(k, v - 1);
    };
    if (src !== this.rank) await this.complete(`recv from rank ${src} (tag ${tag})`, [[src, kind + tag, b]], [], timeoutMs, giveBack);
    else {
      const what = `recv from rank ${src} (itself), tag ${tag}`;
      if (!this.selfDone(what, src, kind + tag, b)) {
        this.inbox.forget(src, kind + tag, b); // not left holding `into` for a later send to itself
        giveBack();
        throw new CommError(`${what}: nothing was sent`);
      }
    }
    return this.inbox.take(src, kind + tag, b);
  }

  private selfDone(what: string, src: number, a: number, b: number): boolean {
    try {
      return this.inbox.done(src, a, b);
    } catch (e) {
      this.inbox.forget(src, a, b);
      throw e instanceof RefusedMessage ? new CommError(`${what}: ${e.message}`) : e;
    }
  }

  sendObject(value: unknown, dst: number, tag = 0): Promise<void> {
    return this.sendKind(pack(value), dst, KIND_OBJ, tag);
  }

  async recvObject<T = unknown>(src: number, tag = 0, o?: CollectiveOptions): Promise<T> {
    return unpack(await this.recvKind(src, KIND_OBJ, tag, undefined, o?.timeoutMs)) as T;
  }

  // ---- the end ----

  async close(opts: CloseOptions = {}): Promise<void> {
    if (this.p.closed) return;
    const shown = this.p.fatalShown;
    if (opts.abort) {
      // Failing: tell the peers at once and wait for nothing, so this rank exits before its victims.
      try {
        this.links.bye();
      } finally {
        try {
          await this.links.closeSockets();
        } finally {
          this.teardown();
        }
      }
      return;
    }
    // Let queued shared-memory sends reach the ring (the peer may still want them). A peer that is gone
    // ends the wait (waitFor throws); one that is alive but not reading is waited for as a receive is.
    try {
      await this.p.waitFor('close', () => this.links.shmList.filter((l) => !l.idle).map((l) => l.peer), this.timeoutMs);
    } catch { /* a dead or stuck peer must not keep us from closing */ }
    this.saidBye = true;
    this.links.bye(this.weAckedTheirBye);
    // ZeroMQ reports a send done when it is queued, not when it arrived. A peer acknowledges our goodbye
    // as soon as its event loop sees it (whatever it is busy awaiting), and it came after everything else
    // we sent it; a peer that said goodbye itself has done its last receive. Either way nothing of ours
    // is still in flight to it. A dead peer ends the wait (its disconnect). A live peer whose event loop is
    // blocked is waited for up to the comm timeout, as a receive would be: closing our sockets before it
    // reads would drop what we sent it (ZeroMQ discards a closed connection's unread messages), and it
    // would then fail naming us (the likely cause of a CI run where a pipeline stage on lavapipe lost its hand-off).
    try {
      await this.p.waitFor('close', () => {
        const m: number[] = [];
        for (let r = 0; r < this.size; r++) if (r !== this.rank && !this.p.gone.has(r) && !this.peersAckedOurBye.has(r)) m.push(r);
        return m;
      }, this.timeoutMs);
    } catch { /* see above */ }
    this.p.closed = true;
    await this.links.closeSockets();
    this.teardown();
    // E.g. a peer's mismatched collective that reached us after ours had completed: results are wrong.
    if (this.p.fatal && !shown) throw new CommError(`rank ${this.rank}: ${this.p.fatal.message}`);
  }

  /** The shared-memory allReduce, when this world has one (tests look at its plane). */
  get shar(): ShmAllReduce | undefined { return this.all.shm; }

  private teardown(): void {
    this.p.closed = true;
    this.all.shm?.close();
    this.idle.stop();
    this.links.teardown();
  }
}
