// Network data plane and liveness: every rank binds one ROUTER; every rank connects one DEALER to each
// peer. A DEALER's first message proves the job secret for that (sender, receiver) pair, so the ROUTER
// knows which rank each connection is and drops anything else. The DEALERs' disconnect events are how a
// rank learns that a peer died, also when the bytes themselves travel through shared memory.
import * as zmq from 'zeromq';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { HDR, KIND_CTRL, readHeader, writeHeader, type Inbox } from './inbox.js';
import { labelClient } from './address-book.js';

export const ZMQ_PIECE = 4 << 20;
const CTRL_AUTH = 1;
export const CTRL_BYE = 2;
export const CTRL_WAKE = 3;
/** "Your goodbye arrived": everything sent before it did too (one connection keeps order). */
export const CTRL_BYE_ACK = 4;

export function dataProof(secret: Buffer, from: number, to: number, nonce: Buffer): Buffer {
  return createHmac('sha256', secret).update(`tprun/data\0${from}\0${to}\0`).update(nonce).digest();
}

export interface Curve {
  serverPublic: string;
  serverSecret: string;
}

/** Data sockets use a security mechanism (PLAIN, or CURVE under --secure) only so that ZeroMQ shows
 *  each connection to the ZAP handler, which learns its address for refusal logs (./address-book.ts). */
function secureServer(sock: zmq.Router, curve: Curve | undefined): void {
  sock.zapDomain = 'tprun';
  if (curve) {
    sock.curveServer = true;
    sock.curveSecretKey = curve.serverSecret;
  } else sock.plainServer = true;
}

export class DataRouter {
  readonly sock: zmq.Router;
  private byRid = new Map<string, number>();
  private authed = new Set<number>();
  private warned = new Set<string>();

  constructor(
    private me: number,
    private secret: Buffer,
    readonly nonce: Buffer,
    private inbox: Inbox,
    private events: { bye(rank: number): void; byeAck(rank: number): void; wake(): void; fail(err: Error): void; log(msg: string): void },
    curve?: Curve,
    private whereIs: (routingId: Buffer) => string = () => 'an unknown address',
  ) {
    // ZeroMQ's own limit only guards the framing (no piece is ever larger than ZMQ_PIECE): over it, ZeroMQ
    // silently drops the connection, the sender reconnects unauthenticated and the error blames the wrong
    // rank. TPRUN_MAX_MESSAGE_BYTES is enforced on each message's declared total instead (Inbox.target),
    // which names the sender and the limit, as the shared-memory plane does.
    this.sock = new zmq.Router({ linger: 0, maxMessageSize: ZMQ_PIECE + 4096 });
    secureServer(this.sock, curve);
  }

  async bind(ep: string): Promise<string> {
    await this.sock.bind(ep);
    return this.sock.lastEndpoint!;
  }

  start(): void {
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      for await (const frames of this.sock) this.onMessage(frames);
    } catch (e) {
      if (!this.sock.closed) this.events.fail(e as Error);
    }
  }

  private onMessage(frames: Buffer[]): void {
    const rid = frames[0].toString('hex');
    const hdr = frames[1];
    if (!hdr || hdr.length !== HDR) return this.refuse(frames[0], 'malformed frame');
    const h = readHeader(hdr);
    const src = this.byRid.get(rid);
    if (h.a >= KIND_CTRL) {
      if (h.b === CTRL_AUTH) {
        const claimed = h.total;
        const proof = frames[2];
        const want = Number.isInteger(claimed) && claimed >= 0 ? dataProof(this.secret, claimed, this.me, this.nonce) : undefined;
        if (!want || !proof || proof.length !== want.length || !timingSafeEqual(proof, want) || this.authed.has(claimed)) {
          return this.refuse(frames[0], `bad data-plane proof (claims rank ${claimed})`);
        }
        this.authed.add(claimed);
        this.byRid.set(rid, claimed);
        return;
      }
      if (src !== undefined && h.b === CTRL_BYE) return this.events.bye(src);
      if (src !== undefined && h.b === CTRL_WAKE) return this.events.wake();
      if (src !== undefined && h.b === CTRL_BYE_ACK) return this.events.byeAck(src);
      return;
    }
    if (src === undefined) return this.refuse(frames[0], 'data before authentication');
    try {
      const dst = this.inbox.target(src, h);
      const payload = frames[2];
      if ((payload?.length ?? 0) !== h.len) throw new Error(`rank ${src} sent a piece of the wrong length`);
      if (dst && h.len) dst.set(payload);
      this.inbox.landed(src, h);
    } catch (e) {
      this.events.fail(e as Error);
    }
  }

  private refuse(routingId: Buffer, why: string): void {
    const rid = routingId.toString('hex');
    if (this.warned.has(rid) || this.warned.size >= 50) return; // once per connection; junk must not flood the log
    this.warned.add(rid);
    this.events.log(`tprun: rank ${this.me} refused a data connection from ${this.whereIs(routingId)}: ${why}`);
  }

  close(): void {
    this.sock.close();
  }
}

/** The sending side towards one peer, plus its liveness. */
export class ZmqLink {
  readonly sock: zmq.Dealer;
  private q: { frames: Buffer[]; done?: () => void }[] = [];
  private busy = false;
  private closing = false;

  constructor(readonly peer: number, private endpoint: string, onDisconnect: (peer: number) => void, curve?: Curve) {
    this.sock = new zmq.Dealer({ linger: 2000, heartbeatInterval: 2000, heartbeatTimeout: 10000, immediate: false });
    labelClient(this.sock, curve);
    this.sock.events.on('disconnect', () => {
      if (!this.closing) onDisconnect(peer);
    });
    // Connection refusals are not disconnects: the peer may not listen yet; keep quiet until it does.
    this.sock.connect(endpoint);
  }

  authenticate(me: number, secret: Buffer, peerNonce: Buffer): void {
    const h = Buffer.alloc(HDR);
    writeHeader(h, { a: KIND_CTRL, b: CTRL_AUTH, total: me, off: 0, len: 0 });
    this.push([h, dataProof(secret, me, this.peer, peerNonce)]);
  }

  bye(): void {
    this.control(CTRL_BYE);
  }

  byeAck(): void {
    this.control(CTRL_BYE_ACK);
  }

  private control(b: number): void {
    const h = Buffer.alloc(HDR);
    writeHeader(h, { a: KIND_CTRL, b, total: 0, off: 0, len: 0 });
    this.push([h]);
  }

  wake(): void {
    this.control(CTRL_WAKE);
  }

  send(a: number, b: number, data: Uint8Array, done?: () => void, desc = 0): void {
    const total = data.byteLength;
    let off = 0;
    do {
      const len = Math.min(ZMQ_PIECE, total - off);
      const h = Buffer.alloc(HDR);
      writeHeader(h, { a, b, total, off, len, desc });
      // zeromq.js sends large buffers zero-copy (the I/O thread reads them later); copying here lets the
      // caller reuse its array as soon as `done` runs.
      const piece = Buffer.from(data.subarray(off, off + len));
      off += len;
      this.push([h, piece], off >= total ? done : undefined);
    } while (off < total);
  }

  get idle(): boolean {
    return !this.busy && this.q.length === 0;
  }

  private push(frames: Buffer[], done?: () => void): void {
    this.q.push({ frames, done });
    if (!this.busy) void this.drain();
  }

  private async drain(): Promise<void> {
    this.busy = true;
    try {
      while (this.q.length) {
        const m = this.q.shift()!;
        await this.sock.send(m.frames);
        m.done?.();
      }
    } catch {
      /* closed while sending: the world reports the peer */
    } finally {
      this.busy = false;
    }
  }

  async close(): Promise<void> {
    // Let queued messages (BYE included) go out before the socket closes.
    for (let i = 0; i < 200 && !this.idle; i++) await new Promise((r) => setTimeout(r, 5));
    this.closing = true;
    this.sock.linger = 200; // what is still queued is for a peer that is gone or about to close
    this.sock.close(); // its observer ends with it
  }
}
