// `initWorld()`: join the job's ranks and get collectives over them.
//
// Data plane per pair of ranks: shared memory (./shm-link.ts) when both sit on one machine, else the
// authenticated ZeroMQ sockets (./zmq-link.ts), which also carry liveness for every pair.
// Collectives are "direct" (every rank exchanges with every other in one hop) rather than rings: with
// R ranks each rank still moves (R-1)/R of the data per phase, as a ring would, but in one step of
// latency instead of R-1, and every rank reduces contributions in rank order, so results are
// bit-identical on all ranks. Large reductions run in WebAssembly SIMD (./simd.ts).
// Environment knobs: TPRUN_COMM_TIMEOUT_MS (default 600000), TPRUN_MAX_MESSAGE_BYTES (default 4 GiB),
// TPRUN_SPIN_US (busy-wait before sleeping; default 10000, 0 when ranks outnumber cores),
// TPRUN_BIND=none (no CPU binding), TPRUN_TRANSPORT=zmq (no shared memory), TPRUN_ADVERTISE_ADDR.
import { hostname, availableParallelism } from 'node:os';
import net from 'node:net';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { pack, unpack } from 'msgpackr';
import type { CloseOptions, CollectiveOptions, CommArray, CommDType, ReduceOp, World, WorldIdentity } from './types.js';
import { detectIdentity, rendezvousFor, type Env } from './identity.js';
import { CommError, Inbox, KIND_OBJ, KIND_P2P } from './inbox.js';
import { ShmLink, ShmOut, openPeerFile } from './shm-link.js';
import { ShmAllReduce, shmAllReducePlan } from './shm-allreduce.js';
import { DataRouter, ZmqLink, type Curve } from './zmq-link.js';
import { rendezvous, type PeerInfo } from './rendezvous.js';
import { listenForData, narrowRendezvous, ranksAllLocal } from './listen.js';
import { z } from 'zod';
import { bytesOf, dtypeOf, like, reduceInto } from './dtype.js';
import { SimdArena } from './simd.js';
import { descriptor } from './collective-check.js';

/** How long close() waits for a peer to acknowledge its goodbye (one whose event loop is blocked). */
const CLOSE_WAIT_MS = 5000;
/** How long after a peer's disconnect its last messages may still land (see waitFor). */
const DISCONNECT_GRACE_MS = 100;
/** How long a rank whose peer said goodbye waits before failing in turn (see waitFor). */
const SECONDARY_FAILURE_DELAY_MS = 250;
import { bindLocalRank } from './affinity.js';
import { IdleWatch } from './idle.js';
import { acquireAddressBook, type AddressBookUse } from './address-book.js';

export { CommError } from './inbox.js';
export { detectIdentity } from './identity.js';

export interface InitWorldOptions {
  /** Default timeout of every collective, and of the rendezvous (ms). Env: TPRUN_COMM_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Largest message accepted from a peer (bytes). Env: TPRUN_MAX_MESSAGE_BYTES. Default 4 GiB. */
  maxMessageBytes?: number;
  env?: Env;
}

const envNum = (env: Env, name: string): number | undefined => {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new CommError(`${name}='${v}' is not a non-negative number`);
  return n;
};

export async function initWorld(opts: InitWorldOptions = {}): Promise<World> {
  const env = opts.env ?? process.env;
  const id = detectIdentity(env);
  const timeoutMs = opts.timeoutMs ?? envNum(env, 'TPRUN_COMM_TIMEOUT_MS') ?? 600_000;
  const { inWorld: _inWorld, ...identity } = id;
  if (id.size === 1) return new LocalWorld(identity, timeoutMs);
  const w = new ZmqWorld(identity, timeoutMs, opts.maxMessageBytes ?? envNum(env, 'TPRUN_MAX_MESSAGE_BYTES') ?? 2 ** 32, env);
  await w.start(env);
  return w;
}

function hostKey(): string {
  let boot = '';
  try { boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { /* not Linux */ }
  return `${hostname()}/${boot}`;
}

const ELEM: Record<CommDType, number> = { float32: 4, float64: 8, int32: 4, uint8: 1, int8: 1, float16: 2, bfloat16: 2 };

/** Split n elements into R nearly equal chunks; chunk r is [off[r], off[r+1]). */
function chunks(n: number, R: number): number[] {
  const off = [0];
  const base = Math.floor(n / R);
  const extra = n % R;
  for (let r = 0; r < R; r++) off.push(off[r] + base + (r < extra ? 1 : 0));
  return off;
}

function sub<T extends CommArray>(a: T, from: number, to: number): T {
  return a.subarray(from, to) as T;
}

/** A world of one: every collective is a local copy. */
class LocalWorld implements World {
  readonly rank = 0;
  readonly size = 1;
  readonly localRank = 0;
  readonly localSize = 1;
  readonly nodeRank = 0;
  readonly source: string;
  private p2p = new Map<number, Uint8Array[]>();
  constructor(id: WorldIdentity, _timeoutMs: number) {
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
  async close(_opts?: CloseOptions): Promise<void> {}
}

/** The local address the kernel would use to reach host:port (a connected UDP socket sends nothing). */
function routeAddress(host: string, port: number): Promise<string | undefined> {
  return new Promise((res) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const done = (a?: string) => { try { s.close(); } catch { /* closed */ } res(a); };
    s.on('error', () => done(undefined));
    s.connect(port, host, () => {
      let a: string | undefined;
      try { a = s.address().address; } catch { /* not bound */ }
      done(a);
    });
  });
}

function checkRoot(r: number, size: number, what = 'rank'): void {
  if (!Number.isInteger(r) || r < 0 || r >= size) throw new CommError(`${what} ${r} is not in 0..${size - 1}`);
}

interface Ticket { done: boolean; dst: number }
const NONE: number[] = [];
const ONE = new Uint8Array(1);

class ZmqWorld implements World {
  readonly rank: number;
  readonly size: number;
  readonly localRank: number;
  readonly localSize: number;
  readonly nodeRank: number;
  readonly source: string;
  private inbox: Inbox;
  private router!: DataRouter;
  private zlinks: (ZmqLink | undefined)[] = [];
  private shm: (ShmLink | undefined)[] = [];
  private shmList: ShmLink[] = [];
  private shmOut?: ShmOut;
  /** Large allReduce through shared memory, when every rank is on this machine (./shm-allreduce.ts). */
  private shar?: ShmAllReduce;
  private seq = 0;
  private sendSeq = new Map<string, number>();
  private recvSeq = new Map<string, number>();
  private gone = new Map<number, { at: number; why: string }>();
  private byeAcked = new Set<number>();
  private fatal?: Error;
  /** Whether `fatal` reached the script; close() reports one that arrived after the last collective. */
  private fatalShown = false;
  private closed = false;
  /** Everyone asleep in waitFor (several when collectives run concurrently). */
  private wakers = new Set<() => void>();
  /** waitFor calls that have published a sleep epoch (concurrent collectives: several). */
  private sleepers = 0;
  private epoch = 0;
  private spinNs: bigint;
  private scratch = new ArrayBuffer(0);
  private arena = SimdArena.create();
  private log = (m: string) => process.stderr.write(m + '\n');

  constructor(id: WorldIdentity, private timeoutMs: number, maxBytes: number, env: Env) {
    this.rank = id.rank;
    this.size = id.size;
    this.localRank = id.localRank;
    this.localSize = id.localSize;
    this.nodeRank = id.nodeRank;
    this.source = id.source;
    this.inbox = new Inbox(id.size, maxBytes, id.rank);
    this.inbox.onDeliver = () => this.kick();
    // Busy-polling shared memory is what makes small messages fast, but only when every rank has a
    // core of its own; oversubscribed, spinning would steal the time the peer needs to send.
    const spinUs = envNum(env, 'TPRUN_SPIN_US') ?? (id.localSize <= availableParallelism() ? 10_000 : 0);
    this.spinNs = BigInt(Math.round(spinUs * 1000));
  }

  private kick(): void {
    if (!this.wakers.size) return;
    const ws = [...this.wakers];
    this.wakers.clear();
    for (const w of ws) w();
  }

  async start(env: Env): Promise<void> {
    const local = ranksAllLocal(this.source, env);
    const rdv = await narrowRendezvous(rendezvousFor(this, env), local);
    // Before any socket exists, so ZeroMQ's I/O thread starts inside the slice too.
    if (this.localSize > 1) bindLocalRank(this.localRank, this.localSize, env);
    const curve: Curve | undefined = env.TPRUN_CURVE_SERVER_PUBLIC && env.TPRUN_CURVE_SERVER_SECRET
      ? { serverPublic: env.TPRUN_CURVE_SERVER_PUBLIC, serverSecret: env.TPRUN_CURVE_SERVER_SECRET } : undefined;
    const jobTag = createHash('sha256').update(rdv.jobId).digest('hex').slice(0, 12);
    const nonce = randomBytes(32);
    this.book = await acquireAddressBook();
    this.router = new DataRouter(this.rank, rdv.secret, nonce, this.inbox, {
      bye: (r) => {
        this.gone.set(r, { at: 0, why: `rank ${r} closed its world` });
        if (!this.closed) this.zlinks[r]?.byeAck();
        this.kick();
      },
      byeAck: (r) => { this.byeAcked.add(r); this.kick(); },
      wake: () => this.kick(),
      fail: (e) => { this.fatal ??= e; this.kick(); },
      log: this.log,
    }, curve, this.book.whereIs);
    let rv: Awaited<ReturnType<typeof rendezvous>> | undefined;
    try {
      const ep = await listenForData((e) => this.router.bind(e), rdv, this.rank, local, () => this.advertiseHost(rdv.connect, rdv.masterHost));
      if (ShmOut.available()) {
        try { this.shmOut = new ShmOut(jobTag, this.rank, this.size, this.localSize); } catch { this.shmOut = undefined; }
        if (this.shmOut) await this.listenForWakes(this.shmOut.info.wake!).catch(() => { this.shmOut!.info.wake = undefined; });
      }
      const info: PeerInfo = {
        rank: this.rank, host: hostname(), hostKey: hostKey(), pid: process.pid, ...ep, dataNonce: nonce, shm: this.shmOut?.info,
      };
      rv = await rendezvous({
        rank: this.rank, size: this.size, bind: rdv.bind, connect: rdv.connect, secret: rdv.secret, info, timeoutMs: this.timeoutMs, curve, log: this.log,
      });
      const peers = rv.peers;
      this.router.start();
      // Open the shared-memory files of peers on this machine; a pair uses them only if both ends could.
      const opened: (number | undefined)[] = peers.map((p) =>
        p.rank !== this.rank && this.shmOut && p.shm && p.hostKey === info.hostKey ? openPeerFile(p.shm) : undefined);
      const can = await rv.exchange(opened.map((fd) => fd !== undefined), z.array(z.boolean()).length(this.size));
      for (const p of peers) {
        if (p.rank === this.rank) continue;
        const link = new ZmqLink(p.rank, (p.hostKey === info.hostKey && p.dataLocal) || p.data, (r) => this.onDisconnect(r), curve);
        link.authenticate(this.rank, rdv.secret, Buffer.from(p.dataNonce));
        this.zlinks[p.rank] = link;
        const fd = opened[p.rank];
        if (fd !== undefined && can[this.rank][p.rank] && can[p.rank][this.rank]) {
          const waker = p.shm!.wake ? this.wakeSocket(p.shm!.wake) : undefined;
          this.shm[p.rank] = new ShmLink(p.rank, this.rank, this.shmOut!.fd, fd, this.inbox,
            waker ? () => { waker.write(ONE); } : (r) => this.zlinks[r]?.wake(), this.shmOut!.info, p.shm!);
          this.shmList.push(this.shm[p.rank]!);
        }
      }
      const ar = this.shmOut && shmAllReducePlan(this.rank, peers, opened, this.shmOut.fd, can);
      // Everyone has opened every file it needs (the names can go) and has its allReduce area ready.
      const ready = await rv.exchange(!!ar?.ready, z.boolean());
      this.shmOut?.unlink();
      if (ar?.ready && ready.every(Boolean)) {
        this.shar = await ar.start({
          wait: (what, missing, t) => this.waitFor(what, missing, t),
          nudge: () => { for (const l of this.shmList) l.nudge(); },
        });
      }
    } catch (e) {
      rv?.release();
      this.teardown();
      throw e;
    } finally {
      rv?.close();
    }
    this.releaseRendezvous = () => rv?.release();
    this.idle.start(() => {
      if (this.closed) return;
      void this.close().catch((e: Error) => {
        this.log(`tprun: ${e.message}`);
        process.exitCode ||= 1;
      });
    }, env);
  }

  private waiting = 0;
  private idle = new IdleWatch(() => this.waiting > 0 || this.zlinks.some((z) => z && !z.idle) || this.shmList.some((l) => !l.idle));

  private wakeServer?: net.Server;
  private wakeSockets: net.Socket[] = [];

  /** Wake-up bytes from same-machine peers: any byte means "look at the rings again". */
  private listenForWakes(path: string): Promise<void> {
    return new Promise((res, rej) => {
      const srv = net.createServer((c) => {
        this.wakeSockets.push(c);
        c.on('data', () => this.kick());
        c.on('error', () => undefined);
        c.unref();
      });
      srv.once('error', rej);
      srv.listen(path, () => {
        srv.unref();
        this.wakeServer = srv;
        res();
      });
    });
  }

  private wakeSocket(path: string): net.Socket {
    const s = net.connect(path);
    s.on('error', () => undefined); // a dead peer shows through its ZeroMQ link
    s.unref();
    this.wakeSockets.push(s);
    return s;
  }

  /**
   * The address peers use for our data socket: rank 0 is wherever the rendezvous is; the others take
   * the local address of their route to rank 0 (a host name need not resolve on every other host).
   */
  private async advertiseHost(connect: string, masterHost?: string): Promise<string> {
    if (process.env.TPRUN_ADVERTISE_ADDR) return process.env.TPRUN_ADVERTISE_ADDR;
    if (this.rank === 0 && masterHost) return masterHost;
    const m = /^tcp:\/\/\[?([^\]]+?)\]?:(\d+)$/.exec(connect);
    const ip = m ? await routeAddress(m[1], Number(m[2])) : undefined;
    return ip ? (ip.includes(':') ? `[${ip}]` : ip) : hostname();
  }

  private onDisconnect(r: number): void {
    if (this.closed || this.gone.has(r)) return;
    this.gone.set(r, { at: Date.now(), why: `rank ${r} disconnected (it exited or crashed)` });
    this.kick();
  }

  // ---- progress ----

  private pump(): void {
    try {
      for (const l of this.shmList) l.pump();
    } catch (e) {
      // A refused message leaves its ring stuck: the world cannot go on.
      this.fatal ??= e as Error;
      this.fatalShown = true;
      throw new CommError(`${this.current} failed on rank ${this.rank}: ${(e as Error).message}`);
    }
  }
  private current = '';

  private async waitFor(what: string, missing: () => number[], timeoutMs = this.timeoutMs): Promise<void> {
    if (this.closed) throw new CommError(`${what}: the world is closed`);
    if (this.fatal) {
      this.fatalShown = true;
      throw new CommError(`${what} failed on rank ${this.rank}: ${this.fatal.message}`);
    }
    this.current = what;
    // Counted so that an idle world can tell a script that ended from one waiting on its peers (./idle.ts).
    this.waiting++;
    try {
      this.pump();
      let m = missing();
      if (!m.length) return;
      const viaShm = m.every((r) => this.shm[r]);
      if (viaShm && this.spinNs > 0n) {
        const end = process.hrtime.bigint() + this.spinNs;
        do {
          this.pump();
          m = missing();
          if (!m.length) return;
        } while (process.hrtime.bigint() < end);
      }
      const deadline = Date.now() + timeoutMs;
      let asleep = false;
      try {
        for (;;) {
          const fatal = this.fatal as Error | undefined; // set by event handlers while we awaited
          if (fatal) {
            this.fatalShown = true;
            throw new CommError(`${what} failed on rank ${this.rank}: ${fatal.message}`);
          }
          let graceEnd = Infinity;
          for (const r of m) {
            const g = this.gone.get(r);
            if (!g) continue;
            // A disconnect may race the last message it sent; fail only once it has had time to land.
            if (g.at !== 0 && Date.now() - g.at < DISCONNECT_GRACE_MS) {
              graceEnd = Math.min(graceEnd, g.at + DISCONNECT_GRACE_MS);
              continue;
            }
            // This rank fails only because rank r went first. A peer that said goodbye (it closed, or is
            // failing on its own error) still lives: give its exit a head start, so that the launcher (ours
            // or mpirun) names it rather than its victims. A disconnect is seen once r's process is gone.
            if (g.at === 0) await new Promise((res) => setTimeout(res, SECONDARY_FAILURE_DELAY_MS));
            throw new CommError(`${what} failed on rank ${this.rank}: ${g.why}`);
          }
          const left = Math.min(deadline, graceEnd + 1) - Date.now();
          if (Date.now() >= deadline) {
            throw new CommError(`${what} timed out after ${timeoutMs} ms on rank ${this.rank}: no data from rank${m.length > 1 ? 's' : ''} ${m.join(', ')}`);
          }
          // Asleep: peers that move shared-memory data for us send a wake-up; ZeroMQ deliveries kick us
          // directly. The timer only bounds a wake-up lost to the (unfenced) flag/counter race.
          // A fresh epoch each time: a peer wakes us at most once per epoch, and we may sleep again
          // after a wake-up that brought only part of what we wait for.
          if (this.shmOut) {
            if (!asleep) this.sleepers++;
            asleep = true;
            this.shmOut.setSleeping(++this.epoch);
            this.pump();
            m = missing();
            if (!m.length) return;
          }
          await new Promise<void>((res) => {
            const t = setTimeout(done, Math.max(1, Math.min(left, this.shmList.length ? 20 : 200)));
            const wakers = this.wakers;
            wakers.add(done);
            function done() {
              clearTimeout(t);
              wakers.delete(done);
              res();
            }
          });
          this.pump();
          m = missing();
          if (!m.length) return;
        }
      } finally {
        if (asleep && --this.sleepers === 0) this.shmOut!.setSleeping(0);
      }
    } finally {
      this.waiting--;
    }
  }

  private put(dst: number, a: number, b: number, data: Uint8Array, tickets: Ticket[]): void {
    const t: Ticket = { done: false, dst };
    tickets.push(t);
    const done = () => { t.done = true; };
    const s = this.shm[dst];
    const desc = this.inbox.descOf(a);
    if (s) s.send(a, b, data, done, desc);
    else this.zlinks[dst]!.send(a, b, data, () => { done(); this.kick(); }, desc);
  }

  /** Wait until every posted receive (src, a, b) completed and every ticket was sent. */
  private async complete(what: string, recvs: [number, number, number][], tickets: Ticket[], timeoutMs?: number): Promise<void> {
    try {
      await this.waitFor(what, () => {
        // Called in the spin loop: allocate only when something is missing.
        let miss: Set<number> | undefined;
        for (const [src, a, b] of recvs) if (!this.inbox.done(src, a, b)) (miss ??= new Set()).add(src);
        for (const t of tickets) if (!t.done) (miss ??= new Set()).add(t.dst);
        return miss ? [...miss].sort((x, y) => x - y) : NONE;
      }, timeoutMs);
    } catch (e) {
      for (const [src, a, b] of recvs) this.inbox.forget(src, a, b);
      throw e;
    }
  }

  /** The next collective's sequence number; its descriptor is checked against what peers send for it. */
  private nextSeq(desc: number): number {
    this.seq = (this.seq + 1) % 0x40000000;
    try {
      this.inbox.begin(this.seq, desc);
    } catch (e) {
      this.fatal ??= e as Error; // the ranks' collectives no longer line up: nothing after this can work
      this.fatalShown = true;
      throw e;
    }
    return this.seq;
  }

  private scratchBytes(n: number): Uint8Array {
    if (this.scratch.byteLength < n) this.scratch = new ArrayBuffer(Math.max(n, this.scratch.byteLength * 2));
    return new Uint8Array(this.scratch, 0, n);
  }

  // ---- collectives ----

  async barrier(o?: CollectiveOptions): Promise<void> {
    const a = this.nextSeq(descriptor('barrier'));
    const recvs: [number, number, number][] = [];
    const tickets: Ticket[] = [];
    const empty = new Uint8Array(0);
    for (let r = 0; r < this.size; r++) {
      if (r === this.rank) continue;
      this.inbox.post(r, a, 0);
      recvs.push([r, a, 0]);
      this.put(r, a, 0, empty, tickets);
    }
    await this.complete(`barrier #${a}`, recvs, tickets, o?.timeoutMs);
    for (const [r] of recvs) this.inbox.take(r, a, 0);
  }

  async broadcast<T extends CommArray>(buf: T, root: number, o?: CollectiveOptions): Promise<T> {
    checkRoot(root, this.size, 'broadcast root');
    const a = this.nextSeq(descriptor('broadcast', dtypeOf(buf, o?.dtype), undefined, root));
    const bytes = bytesOf(buf);
    const tickets: Ticket[] = [];
    if (this.rank === root) {
      for (let r = 0; r < this.size; r++) if (r !== root) this.put(r, a, 0, bytes, tickets);
      await this.complete(`broadcast #${a} from rank ${root}`, [], tickets, o?.timeoutMs);
    } else {
      this.inbox.post(root, a, 0, bytes);
      await this.complete(`broadcast #${a} from rank ${root}`, [[root, a, 0]], tickets, o?.timeoutMs);
      this.inbox.take(root, a, 0);
    }
    return buf;
  }

  /**
   * Reductions share this world's scratch memory, so two of them must not overlap (Promise.all of two
   * allReduces is fine: the second starts when the first ends). The sequence number is taken at call
   * time, so the pairing with other ranks follows call order as for every other collective.
   */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.busy;
    const run = prev ? prev.then(fn) : fn();
    const tail = run.then(() => undefined, () => undefined);
    this.busy = tail;
    void tail.then(() => { if (this.busy === tail) this.busy = undefined; });
    return run;
  }
  private busy?: Promise<void>;

  allReduce<T extends CommArray>(buf: T, op: ReduceOp = 'sum', o?: CollectiveOptions): Promise<T> {
    let dtype: CommDType;
    try {
      dtype = dtypeOf(buf, o?.dtype);
      if (op !== 'sum' && op !== 'max' && op !== 'min') throw new CommError(`unknown reduce op '${op}'`);
    } catch (e) {
      return Promise.reject(e);
    }
    let a: number;
    try { a = this.nextSeq(descriptor('allReduce', dtype, op)); } catch (e) { return Promise.reject(e); }
    return this.serial(() => this.allReduceNow(buf, op, dtype, a, o));
  }

  private async allReduceNow<T extends CommArray>(buf: T, op: ReduceOp, dtype: CommDType, a: number, o?: CollectiveOptions): Promise<T> {
    const R = this.size;
    const what = `allReduce #${a} (${buf.length} x ${dtype})`;
    const n = buf.length;
    const nbytes = n * ELEM[dtype];
    if (this.shar && ShmAllReduce.wants(nbytes, n, R)) return this.shar.run(buf, op, dtype, a, this.inbox.descOf(a), what, o?.timeoutMs);
    const tickets: Ticket[] = [];
    const recvs: [number, number, number][] = [];
    if (nbytes * (R - 1) <= 64 * 1024 || n < R) {
      // Small: everyone sends everything to everyone; one hop of latency.
      const tmp = this.scratchBytes(nbytes * R);
      const sources: CommArray[] = [];
      for (let r = 0; r < R; r++) {
        if (r === this.rank) { sources.push(buf); continue; }
        const dst = tmp.subarray(r * nbytes, (r + 1) * nbytes);
        this.inbox.post(r, a, 0, dst);
        recvs.push([r, a, 0]);
        sources.push(like(buf, dst));
        this.put(r, a, 0, bytesOf(buf), tickets);
      }
      await this.complete(what, recvs, tickets, o?.timeoutMs);
      for (const [r] of recvs) this.inbox.take(r, a, 0);
      reduceInto(dtype, op, buf, sources);
      return buf;
    }
    // Large: reduce-scatter (rank r reduces chunk r) then all-gather, both direct.
    const off = chunks(n, R);
    const mine = sub(buf, off[this.rank], off[this.rank + 1]);
    const slots = this.slots(dtype, op, R, mine.byteLength);
    // The all-gather's receives are posted first, so peers' reduced chunks land in `buf` directly
    // whenever they come (a peer sends its chunk only after it has read all of ours from that place).
    const recvs2: [number, number, number][] = [];
    for (let k = 1; k < R; k++) {
      const r = (this.rank + k) % R;
      this.inbox.post(r, a, 1, bytesOf(sub(buf, off[r], off[r + 1])));
      recvs2.push([r, a, 1]);
      this.inbox.post(r, a, 0, slots[r]);
      recvs.push([r, a, 0]);
      this.put(r, a, 0, bytesOf(sub(buf, off[r], off[r + 1])), tickets);
    }
    await this.complete(what, recvs, tickets, o?.timeoutMs);
    for (const [r] of recvs) this.inbox.take(r, a, 0);
    this.reduceSlots(dtype, op, mine, slots);
    for (let k = 1; k < R; k++) this.put((this.rank + k) % R, a, 1, bytesOf(mine), tickets);
    await this.complete(what, recvs2, tickets, o?.timeoutMs);
    for (const [r] of recvs2) this.inbox.take(r, a, 1);
    return buf;
  }

  /** R receive slots of `bytes` each for a reduction (slot `rank` is for our own contribution). */
  private slots(dtype: CommDType, op: ReduceOp, R: number, bytes: number): Uint8Array[] {
    if (this.arena && bytes >= 16384 && SimdArena.supports(dtype, op)) return this.arena.slots(R, bytes);
    const stride = Math.ceil(bytes / 16) * 16;
    const tmp = this.scratchBytes(stride * R);
    return Array.from({ length: R }, (_, r) => tmp.subarray(r * stride, r * stride + bytes));
  }

  /** out = slot 0 op slot 1 op ... (rank order), our own contribution taken from `out`. */
  private reduceSlots(dtype: CommDType, op: ReduceOp, out: CommArray, slots: Uint8Array[]): void {
    const own = bytesOf(out);
    if (this.arena && slots[0].buffer === this.arena.mem.buffer) {
      // Block by block, so our copy-in, the vector loop and the copy-out meet in cache.
      const B = 128 * 1024;
      for (let o = 0; o < own.byteLength; o += B) {
        const e = Math.min(own.byteLength, o + B);
        slots[this.rank].set(own.subarray(o, e), o);
        this.arena.reduce(dtype, op, slots.map((sl) => sl.subarray(o, e)), ELEM[dtype]);
        own.set(slots[0].subarray(o, e), o);
      }
      return;
    }
    reduceInto(dtype, op, out, slots.map((s, r) => (r === this.rank ? out : like(out, s))));
  }

  reduceScatter<T extends CommArray>(buf: T, op: ReduceOp = 'sum', o?: CollectiveOptions): Promise<T> {
    let dtype: CommDType;
    try {
      dtype = dtypeOf(buf, o?.dtype);
      if (op !== 'sum' && op !== 'max' && op !== 'min') throw new CommError(`unknown reduce op '${op}'`);
      if (buf.length % this.size !== 0) throw new CommError(`reduceScatter: length ${buf.length} does not divide by the world size ${this.size}`);
    } catch (e) {
      return Promise.reject(e);
    }
    let a: number;
    try { a = this.nextSeq(descriptor('reduceScatter', dtype, op)); } catch (e) { return Promise.reject(e); }
    return this.serial(() => this.reduceScatterNow(buf, op, dtype, a, o));
  }

  private async reduceScatterNow<T extends CommArray>(buf: T, op: ReduceOp, dtype: CommDType, a: number, o?: CollectiveOptions): Promise<T> {
    const R = this.size;
    const k = buf.length / R;
    const out = sub(buf, this.rank * k, (this.rank + 1) * k).slice() as T;
    const tickets: Ticket[] = [];
    const recvs: [number, number, number][] = [];
    const slots = this.slots(dtype, op, R, out.byteLength);
    for (let j = 1; j < R; j++) {
      const r = (this.rank + j) % R;
      this.inbox.post(r, a, 0, slots[r]);
      recvs.push([r, a, 0]);
      this.put(r, a, 0, bytesOf(sub(buf, r * k, (r + 1) * k)), tickets);
    }
    await this.complete(`reduceScatter #${a}`, recvs, tickets, o?.timeoutMs);
    for (const [r] of recvs) this.inbox.take(r, a, 0);
    this.reduceSlots(dtype, op, out, slots);
    return out;
  }

  async allGather<T extends CommArray>(buf: T, o?: CollectiveOptions): Promise<T> {
    const a = this.nextSeq(descriptor('allGather', dtypeOf(buf, o?.dtype)));
    const n = buf.length;
    const C = buf.constructor as unknown as { new (n: number): T };
    const out = new C(n * this.size);
    out.set(buf as never, this.rank * n);
    const tickets: Ticket[] = [];
    const recvs: [number, number, number][] = [];
    for (let r = 0; r < this.size; r++) {
      if (r === this.rank) continue;
      this.inbox.post(r, a, 0, bytesOf(sub(out, r * n, (r + 1) * n)));
      recvs.push([r, a, 0]);
      this.put(r, a, 0, bytesOf(buf), tickets);
    }
    await this.complete(`allGather #${a}`, recvs, tickets, o?.timeoutMs);
    for (const [r] of recvs) this.inbox.take(r, a, 0);
    return out;
  }

  async gather<T extends CommArray>(buf: T, root: number, o?: CollectiveOptions): Promise<T | undefined> {
    checkRoot(root, this.size, 'gather root');
    const a = this.nextSeq(descriptor('gather', dtypeOf(buf, o?.dtype), undefined, root));
    const n = buf.length;
    const tickets: Ticket[] = [];
    if (this.rank !== root) {
      this.put(root, a, 0, bytesOf(buf), tickets);
      await this.complete(`gather #${a} to rank ${root}`, [], tickets, o?.timeoutMs);
      return undefined;
    }
    const C = buf.constructor as unknown as { new (n: number): T };
    const out = new C(n * this.size);
    out.set(buf as never, root * n);
    const recvs: [number, number, number][] = [];
    for (let r = 0; r < this.size; r++) {
      if (r === root) continue;
      this.inbox.post(r, a, 0, bytesOf(sub(out, r * n, (r + 1) * n)));
      recvs.push([r, a, 0]);
    }
    await this.complete(`gather #${a} to rank ${root}`, recvs, tickets, o?.timeoutMs);
    for (const [r] of recvs) this.inbox.take(r, a, 0);
    return out;
  }

  async scatter<T extends CommArray>(pieces: T[] | undefined, root: number, into: T, o?: CollectiveOptions): Promise<T> {
    checkRoot(root, this.size, 'scatter root');
    const a = this.nextSeq(descriptor('scatter', dtypeOf(into, o?.dtype), undefined, root));
    const tickets: Ticket[] = [];
    if (this.rank === root) {
      if (!pieces || pieces.length !== this.size) throw new CommError(`scatter #${a}: the root needs ${this.size} pieces, got ${pieces?.length ?? 0}`);
      pieces.forEach((p, r) => {
        if (p.length !== into.length) throw new CommError(`scatter #${a}: piece ${r} has ${p.length} elements, \`like\` has ${into.length}`);
      });
      for (let r = 0; r < this.size; r++) if (r !== root) this.put(r, a, 0, bytesOf(pieces[r]), tickets);
      into.set(pieces[root] as never);
      await this.complete(`scatter #${a} from rank ${root}`, [], tickets, o?.timeoutMs);
      return into;
    }
    this.inbox.post(root, a, 0, bytesOf(into));
    await this.complete(`scatter #${a} from rank ${root}`, [[root, a, 0]], tickets, o?.timeoutMs);
    this.inbox.take(root, a, 0);
    return into;
  }

  private p2pSeq(map: Map<string, number>, peer: number, kind: number, tag: number): number {
    const k = `${peer}:${kind}:${tag}`;
    const v = (map.get(k) ?? 0) + 1;
    map.set(k, v);
    return v % 2097152;
  }

  private checkTag(tag: number): void {
    if (!Number.isInteger(tag) || tag < 0 || tag >= 0x40000000) throw new CommError(`tag ${tag} is not in 0..2^30-1`);
  }

  async send(buf: CommArray, dst: number, tag = 0): Promise<void> {
    return this.sendKind(bytesOf(buf), dst, KIND_P2P, tag);
  }

  private async sendKind(bytes: Uint8Array, dst: number, kind: number, tag: number): Promise<void> {
    checkRoot(dst, this.size, 'destination rank');
    this.checkTag(tag);
    const b = this.p2pSeq(this.sendSeq, dst, kind, tag);
    const tickets: Ticket[] = [];
    if (dst === this.rank) {
      // To self: hand a copy to our own inbox.
      const h = { a: kind + tag, b, total: bytes.byteLength, off: 0, len: bytes.byteLength };
      this.inbox.target(this.rank, h).set(bytes);
      this.inbox.landed(this.rank, h);
      return;
    }
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
    if (src !== this.rank) await this.complete(`recv from rank ${src} (tag ${tag})`, [[src, kind + tag, b]], [], timeoutMs);
    else if (!this.inbox.done(src, kind + tag, b)) throw new CommError(`recv from rank ${src} (itself), tag ${tag}: nothing was sent`);
    return this.inbox.take(src, kind + tag, b);
  }

  async sendObject(value: unknown, dst: number, tag = 0): Promise<void> {
    return this.sendKind(pack(value), dst, KIND_OBJ, tag);
  }

  async recvObject<T = unknown>(src: number, tag = 0, o?: CollectiveOptions): Promise<T> {
    return unpack(await this.recvKind(src, KIND_OBJ, tag, undefined, o?.timeoutMs)) as T;
  }

  async broadcastObject<T = unknown>(value: T | undefined, root: number, o?: CollectiveOptions): Promise<T> {
    checkRoot(root, this.size, 'broadcast root');
    const a = this.nextSeq(descriptor('broadcastObject', undefined, undefined, root));
    const tickets: Ticket[] = [];
    if (this.rank === root) {
      const bytes = pack(value);
      for (let r = 0; r < this.size; r++) if (r !== root) this.put(r, a, 0, bytes, tickets);
      await this.complete(`broadcastObject #${a} from rank ${root}`, [], tickets, o?.timeoutMs);
      return value as T;
    }
    this.inbox.post(root, a, 0);
    await this.complete(`broadcastObject #${a} from rank ${root}`, [[root, a, 0]], tickets, o?.timeoutMs);
    return unpack(this.inbox.take(root, a, 0)) as T;
  }

  async close(opts: CloseOptions = {}): Promise<void> {
    if (this.closed) return;
    const shown = this.fatalShown;
    if (opts.abort) {
      // Failing: tell the peers at once and wait for nothing, so this rank exits before its victims.
      for (const z of this.zlinks) z?.bye();
      await Promise.all(this.zlinks.map((z) => z?.close()));
      this.teardown();
      return;
    }
    // Let queued shared-memory sends reach the ring (the peer may still want them), briefly.
    try {
      await this.waitFor('close', () => this.shmList.filter((l) => !l.idle).map((l) => l.peer), 5000);
    } catch { /* a dead or stuck peer must not keep us from closing */ }
    for (const z of this.zlinks) z?.bye();
    // ZeroMQ reports a send done when it is queued, not when it arrived. A peer acknowledges our goodbye
    // as soon as its event loop sees it (whatever it is busy awaiting), and it came after everything else
    // we sent it; a peer that said goodbye itself has done its last receive. Either way nothing of ours
    // is still in flight to it. Bounded: a peer whose event loop is blocked or dead must not keep us.
    try {
      await this.waitFor('close', () => {
        const m: number[] = [];
        for (let r = 0; r < this.size; r++) if (r !== this.rank && !this.gone.has(r) && !this.byeAcked.has(r)) m.push(r);
        return m;
      }, Math.min(this.timeoutMs, CLOSE_WAIT_MS));
    } catch { /* see above */ }
    this.closed = true;
    await Promise.all(this.zlinks.map((z) => z?.close()));
    this.teardown();
    // E.g. a peer's mismatched collective that reached us after ours had completed: results are wrong.
    if (this.fatal && !shown) throw new CommError(`rank ${this.rank}: ${this.fatal.message}`);
  }

  private releaseRendezvous?: () => void;
  private book?: AddressBookUse;

  private teardown(): void {
    this.closed = true;
    this.idle.stop();
    this.releaseRendezvous?.();
    this.book?.release();
    for (const s of this.wakeSockets) s.destroy();
    this.wakeServer?.close();
    for (const z of this.zlinks) if (z && !z.sock.closed) z.sock.close();
    this.router?.close();
    this.shar?.close();
    for (const s of this.shmList) s.close();
    this.shmOut?.close();
  }
}
