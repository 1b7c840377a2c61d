// Control plane: rank 0 binds a ROUTER where the other ranks introduce themselves. Each side proves the
// job secret over fresh nonces from the other side (HMAC-SHA256), so a recorded handshake cannot be
// replayed and a fake rank 0 is noticed too. A peer that fails is refused, and rank 0 logs its address
// (learnt through a ZAP handler, the one place ZeroMQ reveals who connected).
import * as zmq from 'zeromq';
import { pack, unpack } from 'msgpackr';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { CommError } from './inbox.js';
import type { Curve } from './zmq-link.js';

/** What each rank tells the others at rendezvous. */
export interface PeerInfo {
  rank: number;
  host: string;
  /** Ranks with equal hostKey may share memory. */
  hostKey: string;
  pid: number;
  data: string;
  dataNonce: Uint8Array;
  shm?: { path: string; token: string; slot: number; slots: number; wake?: string };
}

const mac = (secret: Buffer, ...parts: (string | Uint8Array)[]) => {
  const h = createHmac('sha256', secret);
  for (const p of parts) h.update(p).update('\0');
  return h.digest();
};
const same = (a: Uint8Array | undefined, b: Buffer) => !!a && a.length === b.length && timingSafeEqual(a, b);

const ZAP_EP = 'inproc://zeromq.zap.01';

/**
 * Learns the network address of each connection: ZeroMQ hands every new connection to the ZAP handler
 * with its address. Clients make their routing id equal to the credential ZAP sees (a random PLAIN
 * user name, or their CURVE public key), which ties a ROUTER message back to an address.
 */
class AddressBook {
  private rep = new zmq.Reply();
  readonly addr = new Map<string, string>();
  async start(): Promise<void> {
    try {
      await this.rep.bind(ZAP_EP);
    } catch {
      this.rep.close(); // another world in this process already answers ZAP; addresses stay unknown
      return;
    }
    void (async () => {
      try {
        for await (const f of this.rep) {
          // [version, request id, domain, address, identity, mechanism, credentials...]
          const mech = f[5]?.toString();
          const cred = mech === 'PLAIN' ? f[6]?.toString() : mech === 'CURVE' && f[6] ? z85(f[6]) : undefined;
          if (cred) this.addr.set(cred, f[3].toString());
          await this.rep.send([f[0], f[1], '200', 'OK', '', '']);
        }
      } catch { /* closed */ }
    })();
  }
  close(): void {
    this.rep.close();
  }
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
function z85(b: Buffer): string {
  let s = '';
  for (let i = 0; i + 4 <= b.length; i += 4) {
    let v = b.readUInt32BE(i);
    const c: string[] = [];
    for (let k = 0; k < 5; k++) { c.unshift(Z85[v % 85]); v = Math.floor(v / 85); }
    s += c.join('');
  }
  return s;
}

export interface Rendezvoused {
  peers: PeerInfo[];
  /** Rank 0 gathers what every rank could open and tells everyone; round two of the handshake. */
  exchange<T>(mine: T): Promise<T[]>;
  /** Ends the rendezvous socket. */
  close(): void;
  /** Ends the ZAP handler too. Only at the world's end: ZeroMQ asks it about every CURVE connection of
   *  this process, and a handler closed during a handshake would leave that connection hanging. */
  release(): void;
}

export async function rendezvous(opts: {
  rank: number; size: number; bind: string; connect: string; secret: Buffer; info: PeerInfo; timeoutMs: number; curve?: Curve;
  log: (m: string) => void;
}): Promise<Rendezvoused> {
  return opts.rank === 0 ? serve(opts) : join(opts);
}

async function serve(o: Parameters<typeof rendezvous>[0]): Promise<Rendezvoused> {
  const book = new AddressBook();
  await book.start();
  const sock = new zmq.Router({ linger: 1000, maxMessageSize: 1 << 20, zapDomain: 'tprun' });
  if (o.curve) {
    sock.curveServer = true;
    sock.curveSecretKey = o.curve.serverSecret;
  } else sock.plainServer = true;
  try {
    await sock.bind(o.bind);
  } catch (e) {
    sock.close();
    book.close();
    throw new CommError(`rank 0 cannot listen on ${o.bind}: ${(e as Error).message}`);
  }
  const peers: PeerInfo[] = new Array(o.size);
  peers[0] = o.info;
  const ridOf: Buffer[] = new Array(o.size);
  const nonces = new Map<string, { cn: Buffer; sn: Buffer }>();
  const whereIs = (rid: Buffer) => book.addr.get(rid.toString()) ?? 'an unknown address';
  const deadline = Date.now() + o.timeoutMs;
  let inbox: Buffer[][] = [];

  async function next(): Promise<Buffer[]> {
    if (inbox.length) return inbox.shift()!;
    const left = deadline - Date.now();
    const missing = [...peers.keys()].filter((r) => !peers[r]);
    if (left <= 0) throw new CommError(`rendezvous timed out after ${o.timeoutMs} ms at rank 0: ranks ${missing.join(', ')} did not arrive`);
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        sock.receive(),
        new Promise<never>((_, rej) => { t = setTimeout(() => rej(new CommError(`rendezvous timed out after ${o.timeoutMs} ms at rank 0: ranks ${[...peers.keys()].filter((r) => !peers[r]).join(', ')} did not arrive`)), left); }),
      ]);
    } finally {
      clearTimeout(t);
    }
  }

  const refuse = async (rid: Buffer, why: string) => {
    o.log(`tprun: rank 0 refused a connection from ${whereIs(rid)}: ${why}`);
    await sock.send([rid, 'DENY', pack({ reason: why })]).catch(() => undefined);
  };

  let joined = 1;
  try {
    while (joined < o.size) {
      const [rid, typeB, body] = await next();
      const type = typeB?.toString();
      let msg: any;
      try { msg = body ? unpack(body) : {}; } catch { await refuse(rid, 'unreadable message'); continue; }
      const key = rid.toString('hex');
      if (type === 'HELLO') {
        const cn = Buffer.from(msg.cn ?? []);
        if (cn.length !== 32) { await refuse(rid, 'malformed hello'); continue; }
        const sn = randomBytes(32);
        nonces.set(key, { cn, sn });
        await sock.send([rid, 'CHAL', pack({ sn, sp: mac(o.secret, 'tprun/server', cn, sn) })]);
      } else if (type === 'AUTH') {
        const n = nonces.get(key);
        nonces.delete(key);
        const r = msg.info?.rank;
        if (!n) { await refuse(rid, 'authentication without a challenge'); continue; }
        if (!same(msg.cp, mac(o.secret, 'tprun/client', String(r), n.sn, n.cn))) { await refuse(rid, `wrong job secret (claims rank ${r})`); continue; }
        if (msg.size !== o.size) { await refuse(rid, `rank ${r} believes the world has ${msg.size} ranks, rank 0 has ${o.size}`); continue; }
        if (!Number.isInteger(r) || r < 1 || r >= o.size) { await refuse(rid, `rank ${r} is out of range 1..${o.size - 1}`); continue; }
        if (peers[r]) { await refuse(rid, `rank ${r} joined twice`); continue; }
        peers[r] = msg.info;
        ridOf[r] = rid;
        joined++;
      } else await refuse(rid, `unexpected '${type}'`);
    }
    for (let r = 1; r < o.size; r++) await sock.send([ridOf[r], 'WORLD', pack({ peers })]);
  } catch (e) {
    sock.close();
    book.close();
    throw e;
  }

  return {
    peers,
    async exchange<T>(mine: T): Promise<T[]> {
      const all: T[] = new Array(o.size);
      all[0] = mine;
      let got = 1;
      const keep: Buffer[][] = [];
      while (got < o.size) {
        const f = await next();
        const r = ridOf.findIndex((x) => x && x.equals(f[0]));
        if (r < 1 || f[1]?.toString() !== 'EXCH') { keep.push(f); continue; }
        all[r] = unpack(f[2]).v;
        got++;
      }
      inbox = keep;
      for (let r = 1; r < o.size; r++) await sock.send([ridOf[r], 'EXCH', pack({ all })]);
      return all;
    },
    close() {
      sock.close();
    },
    release() {
      sock.close();
      book.close();
    },
  };
}

async function join(o: Parameters<typeof rendezvous>[0]): Promise<Rendezvoused> {
  const sock = new zmq.Dealer({ linger: 1000, maxMessageSize: 16 << 20 });
  if (o.curve) {
    const kp = zmq.curveKeyPair();
    sock.curveServerKey = o.curve.serverPublic;
    sock.curvePublicKey = kp.publicKey;
    sock.curveSecretKey = kp.secretKey;
    sock.routingId = kp.publicKey; // the ZAP handler sees the same key, which ties messages to addresses
  } else {
    // PLAIN here carries no secret (the HMAC exchange does); its user name only labels the connection.
    const user = randomBytes(12).toString('hex');
    sock.plainUsername = user;
    sock.plainPassword = 'tprun';
    sock.routingId = user;
  }
  const deadline = Date.now() + o.timeoutMs;
  const recv = async (what: string): Promise<[string, any]> => {
    let t: NodeJS.Timeout | undefined;
    try {
      const f = await Promise.race([
        sock.receive(),
        new Promise<never>((_, rej) => {
          t = setTimeout(() => rej(new CommError(`rank ${o.rank}: no ${what} from rank 0 at ${o.connect} within ${o.timeoutMs} ms`)), Math.max(1, deadline - Date.now()));
        }),
      ]);
      const type = f[0].toString();
      const body = f[1] ? unpack(f[1]) : {};
      if (type === 'DENY') throw new CommError(`rank ${o.rank}: rank 0 refused this rank: ${body.reason}`);
      return [type, body];
    } finally {
      clearTimeout(t);
    }
  };
  try {
    sock.connect(o.connect);
    const cn = randomBytes(32);
    await sock.send(['HELLO', pack({ cn })]);
    const [t1, chal] = await recv('challenge');
    const sn = Buffer.from(chal.sn ?? []);
    if (t1 !== 'CHAL' || sn.length !== 32) throw new CommError(`rank ${o.rank}: unexpected '${t1}' from the rendezvous at ${o.connect}`);
    // Our proof goes out even if rank 0's fails: it is bound to both nonces, so it tells an impostor
    // nothing, and a real rank 0 can then log who knocked with the wrong secret.
    await sock.send(['AUTH', pack({ size: o.size, info: o.info, cp: mac(o.secret, 'tprun/client', String(o.rank), sn, cn) })]);
    if (!same(chal.sp, mac(o.secret, 'tprun/server', cn, sn))) {
      throw new CommError(`rank ${o.rank}: the rendezvous at ${o.connect} did not prove the job secret (another job on this port, or a different TPRUN_SECRET)`);
    }
    const [t2, world] = await recv('world table');
    if (t2 !== 'WORLD') throw new CommError(`rank ${o.rank}: unexpected '${t2}' from rank 0`);
    return {
      peers: world.peers,
      async exchange<T>(mine: T): Promise<T[]> {
        await sock.send(['EXCH', pack({ v: mine })]);
        const [t, b] = await recv('exchange');
        if (t !== 'EXCH') throw new CommError(`rank ${o.rank}: unexpected '${t}' from rank 0`);
        return b.all;
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
