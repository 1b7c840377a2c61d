// A rank's links to every peer, and how they come up. Per pair of ranks: shared memory (./shm-link.ts)
// when both sit on one machine, else the authenticated ZeroMQ sockets (./zmq-link.ts), which also carry
// liveness (goodbyes, disconnects) for every pair. Same-machine peers wake each other from sleep with a
// byte on a unix socket.
import { hostname } from 'node:os';
import net from 'node:net';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod/v3'; // see wire-schema.ts
import type { WorldIdentity } from './types.js';
import { rendezvousFor, type Env } from './identity.js';
import type { Inbox } from './inbox.js';
import { ShmLink, ShmOut, openPeerFile } from './shm-link.js';
import { shmAllReducePlan } from './shm-allreduce.js';
import { InputError } from '../core/errors.js';
import { pidNamespace } from '../util/proc.js';
import { DataRouter, ZmqLink, type Curve } from './zmq-link.js';
import { rendezvous, type PeerInfo } from './rendezvous.js';
import { listenForData, narrowRendezvous, ranksAllLocal } from './listen.js';
import { bindLocalRank } from './affinity.js';
import { acquireAddressBook, type AddressBookUse } from './address-book.js';
import type { Ticket } from './collectives/round.js';

/** What the links report to their world. */
export interface LinkEvents {
  /** Rank r closed its world (or is failing and said so first). */
  bye(r: number): void;
  byeAck(r: number): void;
  /** Rank r's socket went away: it exited or crashed. */
  disconnect(r: number): void;
  /** Data moved: whoever waits should look again. */
  wake(): void;
  fail(e: Error): void;
  log(m: string): void;
}

const ONE = new Uint8Array(1);

function hostKey(): string {
  let boot = '';
  try { boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { /* not Linux */ }
  return `${hostname()}/${boot}`;
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

export class Links {
  router?: DataRouter;
  zlinks: (ZmqLink | undefined)[] = [];
  shm: (ShmLink | undefined)[] = [];
  shmList: ShmLink[] = [];
  shmOut?: ShmOut;
  /** Large allReduce through shared memory when every rank is on this machine (./shm-allreduce.ts). */
  arPlan?: ReturnType<typeof shmAllReducePlan>;
  private wakeServer?: net.Server;
  private wakeSockets: net.Socket[] = [];
  private book?: AddressBookUse;
  private releaseRendezvous?: () => void;

  constructor(private id: WorldIdentity, private inbox: Inbox, private ev: LinkEvents) {}

  get idle(): boolean {
    return this.zlinks.every((l) => !l || l.idle) && this.shmList.every((l) => l.idle);
  }

  /** `early`: whether this world's allReduce areas are set up early (./shm-allreduce.ts worldStartsEarly). */
  async open(env: Env, timeoutMs: number, early: boolean): Promise<void> {
    const { rank, size, localRank, localSize } = this.id;
    const local = ranksAllLocal(this.id.source, env);
    const rdv = await narrowRendezvous(rendezvousFor(this.id, env), local);
    // Before any socket exists, so ZeroMQ's I/O thread starts inside the slice too.
    if (localSize > 1) bindLocalRank(localRank, localSize, env);
    const curve: Curve | undefined = env.TPRUN_CURVE_SERVER_PUBLIC && env.TPRUN_CURVE_SERVER_SECRET
      ? { serverPublic: env.TPRUN_CURVE_SERVER_PUBLIC, serverSecret: env.TPRUN_CURVE_SERVER_SECRET } : undefined;
    const jobTag = createHash('sha256').update(rdv.jobId).digest('hex').slice(0, 12);
    const nonce = randomBytes(32);
    this.book = await acquireAddressBook();
    const ev = this.ev;
    this.router = new DataRouter(rank, rdv.secret, nonce, this.inbox, {
      bye: (r) => ev.bye(r), byeAck: (r) => ev.byeAck(r), wake: () => ev.wake(), fail: (e) => ev.fail(e), log: ev.log,
    }, curve, this.book.whereIs);
    let rv: Awaited<ReturnType<typeof rendezvous>> | undefined;
    try {
      const ep = await listenForData((e) => this.router!.bind(e), rdv, rank, local, () => this.advertiseHost(rdv.connect, rdv.masterHost));
      if (ShmOut.available()) {
        // No room in /dev/shm: the links carry the data. A knob spelt wrong is the user's to hear about.
        try { this.shmOut = new ShmOut(jobTag, rank, size, localSize, early); } catch (e) { if (e instanceof InputError) throw e; this.shmOut = undefined; }
        if (this.shmOut) await this.listenForWakes(this.shmOut.info.wake!).catch(() => { this.shmOut!.info.wake = undefined; });
      }
      const info: PeerInfo = {
        rank, host: hostname(), hostKey: hostKey(), pid: process.pid, pidNs: pidNamespace(), ...ep, dataNonce: nonce, shm: this.shmOut?.info,
      };
      rv = await rendezvous({ rank, size, bind: rdv.bind, connect: rdv.connect, secret: rdv.secret, step: rdv.slurmStep, info, timeoutMs, curve, log: ev.log });
      const peers = rv.peers;
      this.router.start();
      // Open the shared-memory files of peers on this machine; a pair uses them only if both ends could.
      const opened: (number | undefined)[] = peers.map((p) =>
        p.rank !== rank && this.shmOut && p.shm && p.hostKey === info.hostKey ? openPeerFile(p.shm) : undefined);
      // One round says both which peers' files we opened and whether we have an allReduce area (its pages
      // are allocated at the first call through it, ./shm-allreduce.ts).
      const mine = [...opened.map((fd) => fd !== undefined), !!this.shmOut?.info.ar];
      const all = await rv.exchange(mine, z.array(z.boolean()).length(size + 1));
      const can = all.map((row) => row.slice(0, size));
      // Every rank opened the files it needs before it sent its part of that exchange: the names can go
      // (no second round trip through rank 0 for it).
      this.shmOut?.unlink();
      if (this.shmOut && all.every((row) => row[size])) this.arPlan = shmAllReducePlan(rank, peers, opened, this.shmOut.fd, can);
      for (const p of peers) {
        if (p.rank === rank) continue;
        const link = new ZmqLink(p.rank, (p.hostKey === info.hostKey && p.dataLocal) || p.data, (r) => ev.disconnect(r), curve);
        link.authenticate(rank, rdv.secret, Buffer.from(p.dataNonce));
        this.zlinks[p.rank] = link;
        const fd = opened[p.rank];
        if (fd !== undefined && can[rank][p.rank] && can[p.rank][rank]) {
          const waker = p.shm!.wake ? this.wakeSocket(p.shm!.wake) : undefined;
          this.shm[p.rank] = new ShmLink(p.rank, rank, this.shmOut!.fd, fd, this.inbox,
            waker ? () => { waker.write(ONE); } : (r) => this.zlinks[r]?.wake(), this.shmOut!.info, p.shm!);
          this.shmList.push(this.shm[p.rank]!);
        }
      }
    } catch (e) {
      rv?.release();
      this.teardown();
      throw e;
    } finally {
      rv?.close();
    }
    this.releaseRendezvous = () => rv?.release();
  }

  /** Sends (a, b) to `dst` over its link; the ticket is done once the data left. */
  put(dst: number, a: number, b: number, data: Uint8Array, tickets: Ticket[], desc: number): void {
    const t: Ticket = { done: false, dst };
    tickets.push(t);
    const done = () => { t.done = true; };
    const s = this.shm[dst];
    if (s) s.send(a, b, data, done, desc);
    else this.zlinks[dst]!.send(a, b, data, () => { done(); this.ev.wake(); }, desc);
  }

  /** Moves shared-memory data; throws on a malformed piece or a mismatched collective's message. */
  pump(): void {
    for (const l of this.shmList) l.pump();
  }

  /** Wake-up bytes from same-machine peers: any byte means "look at the rings again". */
  private listenForWakes(path: string): Promise<void> {
    return new Promise((res, rej) => {
      const srv = net.createServer((c) => {
        this.wakeSockets.push(c);
        c.on('data', () => this.ev.wake());
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
    if (this.id.rank === 0 && masterHost) return masterHost;
    const m = /^tcp:\/\/\[?([^\]]+?)\]?:(\d+)$/.exec(connect);
    const ip = m ? await routeAddress(m[1], Number(m[2])) : undefined;
    return ip ? (ip.includes(':') ? `[${ip}]` : ip) : hostname();
  }

  /** Goodbye to every peer but those in `skip` (it acknowledges once its event loop sees it). */
  bye(skip?: ReadonlySet<number>): void {
    this.zlinks.forEach((l, r) => { if (!skip?.has(r)) l?.bye(); });
  }

  async closeSockets(): Promise<void> {
    await Promise.all(this.zlinks.map((l) => l?.close()));
  }

  teardown(): void {
    this.releaseRendezvous?.();
    this.book?.release();
    for (const s of this.wakeSockets) s.destroy();
    this.wakeServer?.close();
    for (const l of this.zlinks) if (l && !l.sock.closed) l.sock.close();
    this.router?.close();
    for (const s of this.shmList) s.close();
    this.shmOut?.close();
  }
}
