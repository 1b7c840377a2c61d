// A rank's links to every peer, and how they come up. Per pair of ranks: shared memory (./shm-link.ts)
// when both sit on one machine, else the authenticated links of ./peer-link.ts, which also carry
// liveness (goodbyes, disconnects) for every pair. Those and the rendezvous run over Node's Unix sockets
// in a private directory when the launcher says every rank is on this machine (./unix-socket.ts), and
// over ZeroMQ otherwise, or under --secure (CurveZMQ), or with TPRUN_TRANSPORT=zmq (./zmq-link.ts, loaded
// only then: loading the zeromq addon and making its context and sockets is ~15 ms of a rank's CPU at
// start, docs/performance.md). Same-machine peers wake each other
// from sleep with a byte on a unix socket.
import { hostname } from 'node:os';
import net from 'node:net';
import { lstatSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { z } from 'zod/v3'; // see wire-schema.ts
import type { WorldIdentity } from './types.js';
import { privateDir, rendezvousFor, type Env, type Rendezvous } from './identity.js';
import type { Inbox } from './inbox.js';
import { ShmLink, ShmOut, openPeerFile } from './shm-link.js';
import { shmAllReducePlan } from './shm-allreduce.js';
import type { Curve } from './zmq-link.js';
import { DataRouter, type PeerLink } from './peer-link.js';
import { CommError } from './inbox.js';
import { InputError } from '../core/errors.js';
import { listenUnix, UnixClient } from './unix-socket.js';
import { DATA_MESSAGE_BYTES, UnixLink } from './unix-link.js';
import { worldHandles } from './idle.js';
import type { MessageClient, MessageServer } from './message-socket.js';
import { rendezvous, type PeerInfo } from './rendezvous.js';
import { listenForData, narrowRendezvous, ranksAllLocal } from './listen.js';
import { bindLocalRank } from './affinity.js';
import type { AddressBookUse } from './address-book.js';
import type { Ticket } from './collectives/round.js';
import { transport } from './transport.js';

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

/** The local address the kernel would use to reach host:port (a connected UDP socket sends nothing).
 *  node:dgram only here (jobs across machines): ~1.5 ms of every local rank's start otherwise. */
function routeAddress(host: string, port: number): Promise<string | undefined> {
  const dgram = process.getBuiltinModule('node:dgram');
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

/** Longest Unix socket path this module makes (sun_path holds 108 bytes on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = 100;

/**
 * The directory of a local world's Unix sockets, or undefined where they cannot go: the directory of an
 * ipc rendezvous (Open MPI's per-job session directory, or identity.ts's private one), else the private
 * directory. Every rank decides alike (same environment), so the whole world uses one transport.
 */
function unixSocketDir(rdv: Rendezvous, env: Env): string | undefined {
  let dir: string;
  try {
    dir = rdv.bind.startsWith('ipc://') ? dirname(rdv.bind.slice('ipc://'.length)) : privateDir(env);
  } catch {
    return undefined;
  }
  // Room for the longest name below: tprun-<12 hex>-<rank, up to 8 digits>-<pid, up to 7>-<8 hex>.sock.
  return dir.length + 54 <= MAX_SOCKET_PATH ? dir : undefined;
}

/**
 * Removes data-socket names that ranks killed outright (SIGKILL, before their world started) left in the
 * directory: the name carries its process id, as the /dev/shm ring files do (./shm-link.ts sweepStale).
 * Only sockets named so, of processes that no longer exist.
 */
function sweepStaleSockets(dir: string): void {
  try {
    for (const name of readdirSync(dir)) {
      const m = /^tprun-[0-9a-f]{12}-\d+-(\d+)-[0-9a-f]{8}\.sock$/.exec(name);
      if (!m) continue;
      try {
        process.kill(Number(m[1]), 0);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') continue;
        try { if (lstatSync(join(dir, name)).isSocket()) unlinkSync(join(dir, name)); } catch { /* raced */ }
      }
    }
  } catch { /* unreadable: nothing to sweep */ }
}

export class Links {
  router?: DataRouter;
  peerLinks: (PeerLink | undefined)[] = [];
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
    return this.peerLinks.every((l) => !l || l.idle) && this.shmList.every((l) => l.idle);
  }

  async open(env: Env, timeoutMs: number): Promise<void> {
    const { rank, size, localRank, localSize } = this.id;
    const local = ranksAllLocal(this.id.source, env);
    const rdv = await narrowRendezvous(rendezvousFor(this.id, env), local);
    // Before any socket exists, so ZeroMQ's I/O thread (where there is one) starts inside the slice too.
    if (localSize > 1) bindLocalRank(localRank, localSize, env);
    const curve: Curve | undefined = env.TPRUN_CURVE_SERVER_PUBLIC && env.TPRUN_CURVE_SERVER_SECRET
      ? { serverPublic: env.TPRUN_CURVE_SERVER_PUBLIC, serverSecret: env.TPRUN_CURVE_SERVER_SECRET } : undefined;
    const jobTag = createHash('sha256').update(rdv.jobId).digest('hex').slice(0, 12);
    const nonce = randomBytes(32);
    const ev = this.ev;
    const unixDir = local && !curve && transport(env) !== 'zmq' ? unixSocketDir(rdv, env) : undefined;
    const zmq = unixDir ? undefined : await import('./zmq-link.js');
    const events = {
      bye: (r: number) => ev.bye(r), byeAck: (r: number) => ev.byeAck(r), wake: () => ev.wake(), fail: (e: Error) => ev.fail(e), log: ev.log,
    };
    let rv: Awaited<ReturnType<typeof rendezvous>> | undefined;
    let unlinkData: (() => void) | undefined;
    try {
      let ep: { data: string; dataLocal?: string };
      let listen: () => Promise<MessageServer>;
      let dial: () => MessageClient;
      if (unixDir) {
        sweepStaleSockets(unixDir);
        const path = join(unixDir, `tprun-${jobTag}-${rank}-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
        const srv = await listenUnix(path, {
          maxMessageBytes: DATA_MESSAGE_BYTES,
          refused: (where, why) => ev.log(`tprun: rank ${rank} refused a data connection from ${where}: ${why}`),
        });
        // It holds the event loop for the world, as ZeroMQ's sockets did; the script's end is still seen.
        worldHandles.add(srv.server);
        this.router = new DataRouter(rank, rdv.secret, nonce, this.inbox, events, srv);
        unlinkData = () => srv.unlink();
        ep = { data: `ipc://${path}` };
        // Rank 0's rendezvous: the ipc path the job named, else one keyed by the job and its address.
        const rdvPath = rdv.bind.startsWith('ipc://') ? rdv.bind.slice('ipc://'.length)
          : join(unixDir, `tprun-${createHash('sha256').update(`${rdv.jobId}\0${rdv.connect}`).digest('hex').slice(0, 12)}.sock`);
        listen = async () => {
          try {
            return await listenUnix(rdvPath, {
              maxMessageBytes: 1 << 20,
              refused: (where, why) => ev.log(`tprun: rank 0 refused a connection from ${where}: ${why}`),
            });
          } catch (e) {
            throw new CommError(`rank 0 cannot listen on ${rdvPath}: ${(e as Error).message}`);
          }
        };
        dial = () => new UnixClient(rdvPath, { maxMessageBytes: 16 << 20, retry: true });
      } else {
        this.book = await zmq!.acquireAddressBook();
        const srv = zmq!.zmqDataServer(curve, this.book);
        this.router = new DataRouter(rank, rdv.secret, nonce, this.inbox, events, srv);
        ep = await listenForData((e) => srv.bind(e), rdv, rank, local, () => this.advertiseHost(rdv.connect, rdv.masterHost));
        listen = () => zmq!.zmqRendezvousServer(rdv.bind, curve);
        dial = () => zmq!.zmqRendezvousClient(rdv.connect, curve);
      }
      if (ShmOut.available()) {
        // No room in /dev/shm: the links carry the data. A knob spelt wrong is the user's to hear about.
        try { this.shmOut = new ShmOut(jobTag, rank, size, localSize); } catch (e) { if (e instanceof InputError) throw e; this.shmOut = undefined; }
        if (this.shmOut) await this.listenForWakes(this.shmOut.info.wake!).catch(() => { this.shmOut!.info.wake = undefined; });
      }
      const info: PeerInfo = {
        rank, host: hostname(), hostKey: hostKey(), pid: process.pid, ...ep, dataNonce: nonce, shm: this.shmOut?.info,
      };
      rv = await rendezvous({ rank, size, connect: rdv.connect, secret: rdv.secret, info, timeoutMs, listen, dial, log: ev.log });
      const peers = rv.peers;
      this.router.start();
      // Each peer's link first: on one machine its connection is made (by the kernel, whatever the peer's
      // event loop is doing) before this rank sends its part of the exchange below, so once the exchange is
      // over no rank needs a data socket's name any more, and nobody else can connect.
      const gone = (r: number) => ev.disconnect(r);
      for (const p of peers) {
        if (p.rank === rank) continue;
        const link: PeerLink = zmq
          ? new zmq.ZmqLink(p.rank, (p.hostKey === info.hostKey && p.dataLocal) || p.data, gone, curve)
          : new UnixLink(p.rank, p.data, gone);
        link.authenticate(rank, rdv.secret, Buffer.from(p.dataNonce));
        this.peerLinks[p.rank] = link;
      }
      if (!zmq) {
        await Promise.all(this.peerLinks.map((l, r) => (l as UnixLink | undefined)?.connected.catch((e: Error) => {
          throw new CommError(`rank ${rank} cannot reach rank ${r}'s data socket ${peers[r].data}: ${e.message}`);
        })));
      }
      // Open the shared-memory files of peers on this machine; a pair uses them only if both ends could.
      const opened: (number | undefined)[] = peers.map((p) =>
        p.rank !== rank && this.shmOut && p.shm && p.hostKey === info.hostKey ? openPeerFile(p.shm) : undefined);
      // One round says both which peers' files we opened and whether we have an allReduce area (its pages
      // are allocated at the first call through it, ./shm-allreduce.ts).
      const mine = [...opened.map((fd) => fd !== undefined), !!this.shmOut?.info.ar];
      const all = await rv.exchange(mine, z.array(z.boolean()).length(size + 1));
      const can = all.map((row) => row.slice(0, size));
      // Every rank opened the files it needs and connected its links before it sent its part of that
      // exchange: the names can go (no second round trip through rank 0 for it).
      this.shmOut?.unlink();
      unlinkData?.();
      if (this.shmOut && all.every((row) => row[size])) this.arPlan = shmAllReducePlan(rank, peers, opened, this.shmOut.fd, can);
      for (const p of peers) {
        const fd = opened[p.rank];
        if (p.rank === rank || fd === undefined || !can[rank][p.rank] || !can[p.rank][rank]) continue;
        const waker = p.shm!.wake ? this.wakeSocket(p.shm!.wake) : undefined;
        this.shm[p.rank] = new ShmLink(p.rank, rank, this.shmOut!.fd, fd, this.inbox,
          waker ? () => { waker.write(ONE); } : (r) => this.peerLinks[r]?.wake(), this.shmOut!.info, p.shm!);
        this.shmList.push(this.shm[p.rank]!);
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
    else this.peerLinks[dst]!.send(a, b, data, () => { done(); this.ev.wake(); }, desc);
  }

  /** Moves shared-memory data; throws when a ring holds a message that was refused. */
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
    s.on('error', () => undefined); // a dead peer shows through its peer link
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
    this.peerLinks.forEach((l, r) => { if (!skip?.has(r)) l?.bye(); });
  }

  async closeSockets(): Promise<void> {
    await Promise.all(this.peerLinks.map((l) => l?.close()));
  }

  teardown(): void {
    this.releaseRendezvous?.();
    this.book?.release();
    for (const s of this.wakeSockets) s.destroy();
    this.wakeServer?.close();
    for (const l of this.peerLinks) l?.destroy();
    this.router?.close();
    for (const s of this.shmList) s.close();
    this.shmOut?.close();
  }
}
