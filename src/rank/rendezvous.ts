// Control plane: rank 0 binds a ROUTER where the other ranks introduce themselves. Each side proves the
// job secret over fresh nonces from the other side (HMAC-SHA256), so a recorded handshake cannot be
// replayed and a fake rank 0 is noticed too; a rank's exchange carries an HMAC over its round's nonces
// (its routing id, which ZMQ_ROUTER_HANDOVER trusts, proves nothing). A peer that fails is refused, and rank 0 logs its address
// (learnt through a ZAP handler, the one place ZeroMQ reveals who connected).
import * as zmq from 'zeromq';
// msgpackr's subpath entries are its pure-JS build: the main entry also loads the optional native
// string extractor (msgpackr-extract, detect-libc: ~20 ms of every rank's start) that small wire messages
// do not need.
import { pack } from 'msgpackr/pack';
import { unpack } from 'msgpackr/unpack';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod/v3'; // see wire-schema.ts
import { CommError } from './inbox.js';
import { processEnded } from '../util/proc.js';
import type { Curve } from './zmq-link.js';
import { acquireAddressBook, labelClient } from './address-book.js';
import { Auth, Chal, Deny, Hello, WorldTable, decode, type PeerInfo } from './wire-schema.js';

/** What each rank tells the others at rendezvous (checked by ./wire-schema.ts on arrival). */
export type { PeerInfo } from './wire-schema.js';

const mac = (secret: Buffer, ...parts: (string | Uint8Array)[]) => {
  const h = createHmac('sha256', secret);
  for (const p of parts) h.update(p).update('\0');
  return h.digest();
};
const same = (a: Uint8Array, b: Buffer) => a.length === b.length && timingSafeEqual(a, b);

export interface Rendezvoused {
  peers: PeerInfo[];
  /** Rank 0 gathers what every rank could open and tells everyone; round two of the handshake.
   *  `schema` checks what the other ranks sent. */
  exchange<T>(mine: T, schema: z.ZodType<T>): Promise<T[]>;
  /** Done with the rendezvous: a joining rank ends its socket; rank 0, once the exchange is answered,
   *  only answers repeated requests from then on (a rank whose answer was lost asks again) until release(). */
  close(): void;
  /** Ends the ZAP handler too. Only at the world's end: ZeroMQ asks it about every CURVE connection of
   *  this process, and a handler closed during a handshake would leave that connection hanging. */
  release(): void;
}

export async function rendezvous(opts: {
  rank: number; size: number; bind: string; connect: string; secret: Buffer; info: PeerInfo; timeoutMs: number; curve?: Curve;
  /** The Slurm step the derived secret came from (Rendezvous.slurmStep), told to the other side. */
  step?: string;
  log: (m: string) => void;
}): Promise<Rendezvoused> {
  return opts.rank === 0 ? serve(opts) : join(opts);
}

/** A socket's next message; a wait that gave up (to warn, say) leaves the receive pending for the next
 *  call, since ZeroMQ allows one at a time. Rejections once nobody waits (socket closed) are dropped. */
function receiver(sock: zmq.Router | zmq.Dealer): () => Promise<Buffer[]> {
  let p: Promise<Buffer[]> | undefined;
  return () => {
    if (!p) {
      const q = sock.receive();
      p = q;
      q.then(() => { p = undefined; }, () => { p = undefined; });
    }
    return p;
  };
}

/** A derived secret includes the Slurm step (identity.ts: concurrent steps must not join each other's world),
 *  so ranks of one world started by several sruns (one per node, say) differ: said as such, not as a bad secret. */
const ONE_WORLD_ACROSS_STEPS = 'one world across srun steps needs TPRUN_SECRET (the same for every rank)';
const acrossSteps = (a: string | undefined, b: string | undefined): boolean => !!a && !!b && a !== b;

/** Rank 0 names the ranks still missing this long after it started waiting (then at the hard limit). */
const WAIT_WARN_MS = 10_000;
/** Refusals logged per rendezvous; a flood of junk must not flood the log as well. */
const MAX_REFUSAL_LOGS = 50;
/** Routing ids with HELLOs waiting for their AUTH; the oldest is dropped beyond this (junk must not grow memory). */
const MAX_PENDING = 256;
/** Challenges kept per routing id (reconnections in quick succession); the oldest is dropped beyond this. */
const MAX_ROUNDS = 4;
/** zmq.h's draft ZMQ_ROUTER_NOTIFY and its flags, ZMQ_NOTIFY_CONNECT | ZMQ_NOTIFY_DISCONNECT. */
const ZMQ_ROUTER_NOTIFY = 97;
const ZMQ_NOTIFY_BOTH = 1 | 2;
/** zeromq.js has no property for ZMQ_ROUTER_NOTIFY; its option setter is open to subclasses. */
class NotifyingRouter extends zmq.Router {
  notifyConnections(): void {
    this.setInt32Option(ZMQ_ROUTER_NOTIFY, ZMQ_NOTIFY_BOTH);
  }
}
/** How long rank 0 waits for a joined rank on another host (or PID namespace) to reconnect after its connection dropped
 *  (a reset on the way; ZeroMQ reconnects under the same routing id, labelClient) before it fails the job. */
const REJOIN_MS = 3000;
/** How often rank 0 looks again whether a joined rank of this host whose connection dropped still lives. */
const LIVENESS_POLL_MS = 250;

/**
 * Whether rank 0 can watch `peer`'s pid: the same host key (boot id and host name) and the same PID
 * namespace. Containers on one host that share its network namespace and name (a container per rank)
 * share the host key but not pids: there a live rank's pid may name nobody (judged dead after a mere
 * connection drop) or another process (a dead rank judged alive), so such a rank is judged as one of
 * another host (REJOIN_MS). Off Linux neither side has a namespace and the host key decides.
 */
export function pidWatchable(peer: Pick<PeerInfo, 'hostKey' | 'pidNs'>, self: Pick<PeerInfo, 'hostKey' | 'pidNs'>): boolean {
  return peer.hostKey === self.hostKey && peer.pidNs === self.pidNs;
}

async function serve(o: Parameters<typeof rendezvous>[0]): Promise<Rendezvoused> {
  const book = await acquireAddressBook();
  // A rank that reconnects (under the same routing id, labelClient) takes its id over at once: without
  // ZMQ_ROUTER_HANDOVER a ROUTER that has not yet read the old connection's drop (its event loop busy)
  // turns the new one away as a duplicate id, and libzmq then reads that connection's next message as its
  // routing id (router.cpp, identify_peer), so rank 0 no longer knew whose messages they were.
  const sock = new NotifyingRouter({ linger: 1000, maxMessageSize: 1 << 20, zapDomain: 'tprun', handover: true });
  if (o.curve) {
    sock.curveServer = true;
    sock.curveSecretKey = o.curve.serverSecret;
  } else sock.plainServer = true;
  // A rank that joined and then died must fail the rendezvous at once, naming it: without a word from
  // ZeroMQ rank 0 would wait for it until the timeout. ZMQ_ROUTER_NOTIFY (libzmq's zmq_setsockopt(3),
  // a draft option that zeromq.js builds in) hands the ROUTER an empty message from a peer whose
  // connection came up or dropped (the two look alike: `dropped` counts them per joined rank). A drop
  // alone is not a death (a TCP reset on the way, after which the rank reconnects): see `dropped`.
  // A libzmq without the option leaves only the timeout, which names the ranks waited for.
  try { sock.notifyConnections(); } catch { /* not built in */ }
  try {
    await sock.bind(o.bind);
  } catch (e) {
    sock.close();
    book.release();
    throw new CommError(`rank 0 cannot listen on ${o.bind}: ${(e as Error).message}`);
  }
  const peers: PeerInfo[] = new Array(o.size);
  peers[0] = o.info;
  const ridOf: Buffer[] = new Array(o.size);
  /** Challenges awaiting their AUTH, by routing id, oldest first (a few: an AUTH sent on a connection that
   *  dropped may be read after the HELLO sent on its reconnection). Each is answered once, then dropped. */
  const nonces = new Map<string, { cn: Buffer; sn: Buffer; step?: string }[]>();
  /** Each joined rank's latest authenticated round: its EXCH must prove the secret for it, once. */
  const joinedWith: { cn: Buffer; sn: Buffer; exchanged?: boolean }[] = new Array(o.size);
  const rankOf = (rid: Buffer) => ridOf.findIndex((x) => x && x.equals(rid));
  /** Whether an EXCH (frames: routing id, 'EXCH', body, MAC) proves the job secret for its rank's current
   *  round. With ZMQ_ROUTER_HANDOVER anyone who learnt a rank's routing id (in clear without --secure) can
   *  speak under it; only the MAC says the rank sent it. */
  const exchProved = (r: number, f: Buffer[]) => {
    const n = joinedWith[r];
    return f.length === 4 && same(f[3], mac(o.secret, 'tprun/exch', String(r), n.sn, n.cn, f[2]));
  };
  const whereIs = (rid: Buffer) => book.whereIs(rid);
  const started = Date.now();
  const deadline = started + o.timeoutMs;
  const missing = () => [...peers.keys()].filter((r) => !peers[r]);
  const ranks = (m: number[]) => `rank${m.length > 1 ? 's' : ''} ${m.join(', ')}`;
  let warned = o.timeoutMs <= WAIT_WARN_MS;
  let inbox: Buffer[][] = [];
  const receive = receiver(sock);
  /** What a timeout says: the ranks that never arrived, or, once all have, those whose exchange did not. */
  let overdue = () => `${ranks(missing())} did not arrive (never called initWorld(), or cannot reach ${o.connect})`;

  /** The joined ranks whose connection may be down (a connection notice came, and no message since),
   *  with the time rank 0 gives up on them (Infinity: of this host, watched by pid). */
  const down = new Map<number, number>();
  const lostRank = (r: number, why: string) =>
    new CommError(`rendezvous failed at rank 0: rank ${r} (${peers[r].host}, pid ${peers[r].pid}) disconnected after joining, before the world formed (${why})`);
  /** Fails on a rank whose connection is down and that has ended, or (another host's) not come back in time. */
  const checkDown = () => {
    for (const [r, until] of down) {
      if (until === Infinity ? processEnded(peers[r].pid) : Date.now() >= until) {
        throw lostRank(r, until === Infinity ? 'it exited or crashed' : 'it exited, crashed, or its connection was lost');
      }
    }
  };

  /** The next message, or undefined once `done()` holds (a rank whose connection dropped is back). */
  async function next(done: () => boolean = () => false): Promise<Buffer[] | undefined> {
    if (inbox.length) return inbox.shift()!;
    for (;;) {
      checkDown();
      if (done()) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) {
        // A rank of this host that lives but never reconnected: named, where `overdue` had nobody left to name.
        const why = down.size ? `${ranks([...down.keys()])} lost ${down.size > 1 ? 'their' : 'its'} connection after joining and did not reconnect` : overdue();
        throw new CommError(`rendezvous timed out after ${o.timeoutMs} ms at rank 0: ${why}`);
      }
      const warnIn = warned ? Infinity : started + WAIT_WARN_MS - Date.now();
      const checkIn = down.size ? Math.min(LIVENESS_POLL_MS, ...[...down.values()].map((u) => u - Date.now())) : Infinity;
      let t: NodeJS.Timeout | undefined;
      try {
        const r = await Promise.race([
          receive(),
          new Promise<undefined>((res) => { t = setTimeout(() => res(undefined), Math.max(0, Math.min(left, warnIn, checkIn))); }),
        ]);
        // A rank counts as back only for a message that proved the secret (heardFrom, in handshake and exchange).
        if (r && !dropped(r)) return r;
        if (r) continue;
      } finally {
        clearTimeout(t);
      }
      if (!warned && Date.now() >= started + WAIT_WARN_MS && missing().length) {
        warned = true;
        o.log(`tprun: rank 0: still waiting for ${ranks(missing())} to join after ${Math.round((Date.now() - started) / 1000)} s (giving up after ${Math.round(o.timeoutMs / 1000)} s, TPRUN_COMM_TIMEOUT_MS)`);
      }
    }
  }

  /**
   * A ROUTER_NOTIFY message (the routing id, one empty frame): a connection of that id came up or dropped,
   * which look alike. For a joined rank either may mean a drop (with ZMQ_ROUTER_HANDOVER, the old
   * connection's drop notice can come under another id, after its reconnection's): it counts as down until
   * a message from it arrives, and a joining rank sends its last request again whenever it reconnects, so
   * a rank that reconnected says so at once. A rank of this host and PID namespace (pidWatchable: its
   * join message's host key, namespace and pid) that has ended fails the world at once, naming it; one
   * that lives is waited for (watched by pid). Any other rank has REJOIN_MS (or the time left, if less) to be heard from again. Anyone else's
   * notice (a refused peer, one that left mid-handshake, a connect) is dropped: a challenge pending for it
   * stays, since the peer may be a rank whose answer was lost with that connection (MAX_PENDING bounds them).
   */
  function dropped(f: Buffer[]): boolean {
    if (f.length !== 2 || f[1].length !== 0) return false;
    const r = rankOf(f[0]);
    if (r > 0 && !down.has(r)) {
      if (pidWatchable(peers[r], o.info)) {
        if (processEnded(peers[r].pid)) throw lostRank(r, 'it exited or crashed');
        down.set(r, Infinity);
      } else down.set(r, Math.min(Date.now() + REJOIN_MS, deadline));
    }
    return true;
  }

  /** An authenticated message from a joined rank shows its connection up. */
  function heardFrom(rid: Buffer): void {
    const r = rankOf(rid);
    if (r > 0 && down.delete(r)) o.log(`tprun: rank 0: rank ${r}'s rendezvous connection dropped and came back`);
  }

  let logged = 0;
  /** Logs a refusal (up to MAX_REFUSAL_LOGS) and tells the peer, unless it speaks under a joined rank's
   *  routing id: that id may be back with the rank itself by now (an impostor took it over with
   *  ZMQ_ROUTER_HANDOVER, and the rank reconnected), and a DENY would end an honest rank. */
  const refuse = async (rid: Buffer, why: string) => {
    const r = rankOf(rid);
    if (logged < MAX_REFUSAL_LOGS) o.log(`tprun: rank 0 refused ${r > 0 ? `a message under rank ${r}'s routing id` : 'a connection'} from ${whereIs(rid)}: ${why}`);
    else if (logged === MAX_REFUSAL_LOGS) o.log('tprun: rank 0: further refusals are not logged');
    logged++;
    if (r < 1) await sock.send([rid, 'DENY', pack({ reason: why })]).catch(() => undefined);
  };

  /** The ranks that did join learn why, rather than timing out on their own with less to say. */
  async function fail(e: Error): Promise<never> {
    for (let r = 1; r < o.size; r++) if (ridOf[r]) await sock.send([ridOf[r], 'FAIL', pack({ reason: e.message })]).catch(() => undefined);
    sock.close();
    book.release();
    throw e;
  }

  let joined = 1;
  let worldSent = false;
  /** Takes rank r's EXCH (frames `f`) once per authenticated round: one without proof of the secret, or a
   *  recorded one replayed, is refused and neither fails the job nor counts as the rank's (anyone who learnt
   *  the routing id may send it). */
  const acceptExch = async (r: number, f: Buffer[]): Promise<boolean> => {
    if (!exchProved(r, f) || joinedWith[r].exchanged) {
      await refuse(f[0], `an exchange without proof of the job secret for rank ${r}'s current challenge`);
      return false;
    }
    joinedWith[r].exchanged = true;
    return true;
  };

  /** The exchange's answer, once sent. */
  let exchanged: Buffer | undefined;
  /** After the rendezvous: repeats of a request get their answer again; notices and anything else are dropped. */
  async function answerRepeats(answer: Buffer): Promise<void> {
    try {
      for (;;) {
        const f = await receive();
        const [rid, typeB, body] = f;
        const type = typeB?.toString('latin1').slice(0, 16);
        const r = rankOf(rid);
        if (type === 'HELLO' || type === 'AUTH') await handshake(rid, type, body);
        else if (type === 'EXCH' && r > 0 && await acceptExch(r, f)) await sock.send([rid, 'EXCH', answer]);
      }
    } catch { /* the socket was released */ }
  }
  const sendWorld = (r: number) => sock.send([ridOf[r], 'WORLD', pack({ peers })]);
  /**
   * A HELLO or AUTH. A rank whose connection dropped starts a fresh round once reconnected (a new HELLO,
   * answered with a new challenge, and its AUTH): its answer may have been lost with the connection. Every
   * HELLO gets a challenge never used before and each challenge takes one AUTH, so a recorded HELLO and
   * AUTH replayed get nothing (README: replays fail); a joined rank's fresh round gets the world table again.
   */
  async function handshake(rid: Buffer, type: string | undefined, body: Buffer | undefined): Promise<void> {
    const key = rid.toString('hex');
    const was = rankOf(rid);
    if (type === 'HELLO') {
      const m = decode(Hello, body);
      if (!m.ok) return refuse(rid, `malformed hello (${m.why})`);
      const cn = Buffer.from(m.value.cn);
      const sn = randomBytes(32);
      const mine = nonces.get(key) ?? [];
      nonces.delete(key); // re-inserted last: the oldest routing id is dropped first
      if (nonces.size >= MAX_PENDING) nonces.delete(nonces.keys().next().value!);
      nonces.set(key, [...mine.slice(-(MAX_ROUNDS - 1)), { cn, sn, step: m.value.step }]);
      await sock.send([rid, 'CHAL', pack({ sn, sp: mac(o.secret, 'tprun/server', cn, sn), ...(o.step ? { step: o.step } : {}) })]);
    } else if (type === 'AUTH') {
      const mine = nonces.get(key);
      if (!mine) return refuse(rid, 'authentication without a challenge');
      const m = decode(Auth, body);
      if (!m.ok) return refuse(rid, `malformed authentication (${m.why})`);
      const { info, size, cp } = m.value;
      const r = info.rank;
      const i = mine.findIndex((n) => same(cp, mac(o.secret, 'tprun/client', String(r), n.sn, n.cn)));
      if (i < 0) {
        nonces.delete(key);
        const theirs = mine[mine.length - 1].step;
        return refuse(rid, acrossSteps(theirs, o.step) ? `rank ${r} is from Slurm step ${theirs}, this world is ${o.step}: ${ONE_WORLD_ACROSS_STEPS}`
          : `wrong job secret (claims rank ${r})`);
      }
      const n = mine[i];
      // This challenge and any older one are spent; a newer one (a HELLO sent after this AUTH) still waits.
      if (i === mine.length - 1) nonces.delete(key);
      else nonces.set(key, mine.slice(i + 1));
      if (was > 0 && was === r) {
        joinedWith[r] = n;
        heardFrom(rid);
        if (worldSent) await sendWorld(r);
        return;
      }
      if (size !== o.size) return refuse(rid, `rank ${r} believes the world has ${size} ranks, rank 0 has ${o.size}`);
      if (r < 1 || r >= o.size) return refuse(rid, `rank ${r} is out of range 1..${o.size - 1}`);
      if (peers[r]) return refuse(rid, `rank ${r} joined twice`);
      peers[r] = info;
      ridOf[r] = rid;
      joinedWith[r] = n;
      joined++;
    } else return refuse(rid, `unexpected '${type ?? ''}'`);
  }

  try {
    // Until every rank has joined and none is reconnecting: a WORLD sent to a rank whose connection is
    // down would be lost (a ROUTER drops what it cannot route).
    const formed = () => joined === o.size && down.size === 0;
    while (!formed()) {
      const f = await next(formed);
      if (!f) break;
      await handshake(f[0], f[1]?.toString('latin1').slice(0, 16), f[2]);
    }
    for (let r = 1; r < o.size; r++) await sendWorld(r);
    worldSent = true;
  } catch (e) {
    await fail(e as Error);
  }

  return {
    peers,
    async exchange<T>(mine: T, schema: z.ZodType<T>): Promise<T[]> {
      const all: T[] = new Array(o.size);
      all[0] = mine;
      let got = 1;
      const keep: Buffer[][] = [];
      const Exch = z.object({ v: schema });
      overdue = () => `${ranks([...all.keys()].filter((r) => all[r] === undefined))} joined but sent no exchange (hung, or lost on the way)`;
      try {
        const everyIn = () => got === o.size && down.size === 0;
        while (!everyIn()) {
          const f = await next(everyIn);
          if (!f) break;
          const r = rankOf(f[0]);
          const type = f[1]?.toString('latin1').slice(0, 16);
          // A rank that lost its world table with a dropped connection asks for it again (a fresh round).
          if (type === 'HELLO' || type === 'AUTH') { await handshake(f[0], type, f[2]); continue; }
          if (r < 1 || type !== 'EXCH') { keep.push(f); continue; }
          if (!await acceptExch(r, f)) continue;
          heardFrom(f[0]);
          if (all[r] !== undefined) continue; // sent again, in a fresh round, after a reconnection
          const m = decode(Exch, f[2]);
          if (!m.ok) throw new CommError(`rank 0: rank ${r} sent a malformed rendezvous exchange (${m.why})`);
          all[r] = m.value.v as T;
          got++;
        }
      } catch (e) {
        await fail(e as Error);
      }
      inbox = keep;
      const answer = pack({ all });
      exchanged = answer;
      for (let r = 1; r < o.size; r++) await sock.send([ridOf[r], 'EXCH', answer]);
      return all;
    },
    close() {
      // Once the exchange is answered the socket stays open until release() (the world's end), answering
      // a rank that asks again: its answer may have gone to a connection that had dropped unnoticed (read
      // after the exchange it carried), and a closed port would read to that rank as rank 0 gone.
      if (exchanged && !sock.closed) void answerRepeats(exchanged);
      else sock.close();
    },
    release() {
      sock.close();
      book.release();
    },
  };
}

/** After rank 0 has answered, how much longer a joining rank waits for its verdict past its own limit:
 *  rank 0's timeout names the missing ranks, which beats a bare "no world table" here. */
const VERDICT_GRACE_MS = 3000;
/** After rank 0's connection dropped, how long a joining rank still reads for the reason rank 0 sent. */
const LOST_GRACE_MS = 200;

async function join(o: Parameters<typeof rendezvous>[0]): Promise<Rendezvoused> {
  // Ranks usually start before rank 0 listens (it starts at the same time, and may load more first):
  // ZeroMQ's default 100 ms between connection attempts then made every launch wait up to 100 ms after
  // rank 0 was ready (seen in `tprun bench launch` traces). A refused connect costs next to nothing.
  const sock = new zmq.Dealer({ linger: 1000, maxMessageSize: 16 << 20, reconnectInterval: 10 });
  labelClient(sock, o.curve);
  const started = Date.now();
  let deadline = started + o.timeoutMs;
  let answered = false;
  let warned = o.timeoutMs <= WAIT_WARN_MS;
  const receive = receiver(sock);
  // Rank 0's connection dropping once it has answered is either a reset on the way (rank 0 lives: ZeroMQ
  // reconnects, and rank 0 waits for this rank) or rank 0 gone, said at once rather than at the end of the
  // timeout. libzmq's socket monitor tells them apart: after a drop it schedules a reconnect
  // ('connect:retry', once), and each attempt that fails schedules another, so a second retry with no
  // 'connect' between is a reconnect refused (ECONNREFUSED: nobody listens on rank 0's port any more;
  // zeromq.js's events carry no errno). A host that does not answer at all leaves it to the timeout.
  // Before rank 0's answer a drop may be a handshake refused (CURVE), which the timeout reports.
  let lost = false;
  let down = false;
  let retries = 0;
  let onLost = () => {};
  sock.events.on('disconnect', () => { if (answered) { down = true; retries = 0; } });
  sock.events.on('connect', () => { down = false; retries = 0; });
  sock.events.on('connect:retry', () => { if (down && ++retries >= 2) { lost = true; onLost(); } });
  // After a reconnection this rank starts a fresh challenge round (a new HELLO, then AUTH for rank 0's new
  // challenge, then its EXCH again if sent): its request, or rank 0's answer, may have been lost with the old
  // connection, and rank 0 learns that this rank is back. Never an old AUTH again: rank 0 answers each
  // challenge once, so a recorded handshake replays to nothing. Each completed ZMTP handshake after the
  // first is a reconnection.
  let handshakes = 0;
  let resend = false;
  let onResend = () => {};
  /** This rank's client nonces, the current one last: a challenge for an older one is a stale answer. */
  const cns: Buffer[] = [];
  /** The current round's challenge, once it came. */
  let sn: Buffer | undefined;
  /** This rank's exchange body, once exchange() sent it. */
  let exch: Buffer | undefined;
  sock.events.on('handshake', () => { if (++handshakes > 1 && cns.length) { resend = true; onResend(); } });
  const cn = () => cns[cns.length - 1];
  const hello = async () => {
    resend = false;
    sn = undefined;
    cns.push(randomBytes(32));
    await sock.send(['HELLO', pack({ cn: cn(), ...(o.step ? { step: o.step } : {}) })]);
  };
  const auth = () => sock.send(['AUTH', pack({ size: o.size, info: o.info, cp: mac(o.secret, 'tprun/client', String(o.rank), sn!, cn()) })]);
  // Bound to this round's nonces and this rank: rank 0 takes an EXCH only with it (anyone who learnt this
  // socket's routing id can speak under it).
  const sendExch = () => sock.send(['EXCH', exch!, mac(o.secret, 'tprun/exch', String(o.rank), sn!, cn(), exch!)]);
  /** The next message within `ms`, or undefined (also at once when `untilLost` and rank 0 is gone, or
   *  when a request is due again). */
  const within = async (ms: number, untilLost: boolean): Promise<Buffer[] | undefined> => {
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        receive(),
        new Promise<undefined>((res) => {
          t = setTimeout(() => res(undefined), Math.max(0, ms));
          if (untilLost) { if (lost || resend) res(undefined); else onLost = onResend = () => res(undefined); }
        }),
      ]);
    } finally {
      clearTimeout(t);
      onLost = onResend = () => {};
    }
  };
  const recv = async <T>(what: string, want: string, schema: z.ZodType<T>): Promise<T> => {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new CommError(`rank ${o.rank}: no ${answered ? what : 'challenge'} from rank 0 at ${o.connect} within ${o.timeoutMs} ms`);
      const warnIn = warned || answered ? Infinity : started + WAIT_WARN_MS - Date.now();
      if (resend) await hello();
      let f = await within(Math.min(left, warnIn), true);
      if (!f && lost) {
        // A rank 0 that failed sent its reason (FAIL) before it closed: read it if it is on its way.
        f = await within(LOST_GRACE_MS, false);
        if (!f) throw new CommError(`rank ${o.rank}: rank 0 at ${o.connect} disconnected during the rendezvous (it exited or crashed)`);
      }
      if (!f) {
        if (!warned && !answered && Date.now() >= started + WAIT_WARN_MS) {
          warned = true;
          o.log(`tprun: rank ${o.rank}: rank 0 has not answered at ${o.connect} after ${Math.round((Date.now() - started) / 1000)} s (not started yet, or never calls initWorld()); giving up after ${Math.round(o.timeoutMs / 1000)} s`);
        }
        continue;
      }
      const type = f[0]?.toString('latin1').slice(0, 16);
      if (type === 'DENY' || type === 'FAIL') {
        const d = decode(Deny, f[1]);
        const reason = d.ok ? d.value.reason : 'no reason given';
        throw new CommError(type === 'DENY' ? `rank ${o.rank}: rank 0 refused this rank: ${reason}` : `rank ${o.rank}: the rendezvous failed: ${reason}`);
      }
      if (type === 'CHAL') {
        const c = decode(Chal, f[1]);
        if (!c.ok) throw new CommError(`rank ${o.rank}: malformed challenge from the rendezvous at ${o.connect} (${c.why})`);
        const s = Buffer.from(c.value.sn);
        const i = cns.findIndex((x) => same(c.value.sp, mac(o.secret, 'tprun/server', x, s)));
        if (i < 0) {
          // Our proof goes out even if rank 0's fails: it is bound to both nonces, so it tells an impostor
          // nothing, and a real rank 0 can then log who knocked with the wrong secret.
          if (!answered) { sn = s; await auth(); }
          if (acrossSteps(o.step, c.value.step)) throw new CommError(`rank ${o.rank}: the rendezvous at ${o.connect} is Slurm step ${c.value.step}, this rank is from step ${o.step}: ${ONE_WORLD_ACROSS_STEPS}`);
          throw new CommError(`rank ${o.rank}: the rendezvous at ${o.connect} did not prove the job secret (another job on this port, or a different TPRUN_SECRET)`);
        }
        if (i < cns.length - 1 || sn) continue; // a challenge for an earlier round, or a copy
        if (!answered) { answered = true; deadline += VERDICT_GRACE_MS; }
        sn = s;
        await auth();
        if (exch) await sendExch();
        continue;
      }
      // The world table again, after a fresh round during the exchange.
      if (type === 'WORLD' && want === 'EXCH') continue;
      if (type !== want) throw new CommError(`rank ${o.rank}: unexpected '${type}' from the rendezvous at ${o.connect} (expected ${want})`);
      const m = decode(schema, f[1]);
      if (!m.ok) throw new CommError(`rank ${o.rank}: malformed ${what} from the rendezvous at ${o.connect} (${m.why})`);
      return m.value;
    }
  };
  try {
    sock.connect(o.connect);
    await hello();
    // recv answers the challenge (this round's and any after a reconnection) with AUTH.
    const world = await recv('world table', 'WORLD', WorldTable);
    if (world.peers.length !== o.size || world.peers.some((p, r) => !p || p.rank !== r)) {
      throw new CommError(`rank ${o.rank}: rank 0 sent a world table of ${world.peers.length} ranks for a world of ${o.size}`);
    }
    return {
      peers: world.peers,
      async exchange<T>(mine: T, schema: z.ZodType<T>): Promise<T[]> {
        exch = pack({ v: mine });
        if (sn) await sendExch(); // else the round under way sends it once its challenge came
        deadline = Date.now() + o.timeoutMs;
        const b = await recv('exchange', 'EXCH', z.object({ all: z.array(schema).length(o.size) }));
        return b.all as T[];
      },
      close() {
        sock.close();
      },
      release() {
        sock.close();
      },
    };
  } catch (e) {
    sock.close();
    throw e;
  }
}
