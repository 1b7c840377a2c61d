// The data plane's links between two ranks, whatever carries them: every rank listens on one socket
// (DataRouter) and connects one link to each peer (PeerLink). A link's first message proves the job
// secret for that (sender, receiver) pair, so the receiving side knows which rank each connection is and
// drops anything else. A link's disconnect is how a rank learns that a peer died, also when the bytes
// themselves travel through shared memory. Carried by ZeroMQ (./zmq-link.ts) or, when every rank is on
// this machine, by Node's Unix sockets (./unix-socket.ts); this module loads neither.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { HDR, KIND_CTRL, readHeader, writeHeader, type Inbox } from './inbox.js';
import type { Frame, MessageServer } from './message-socket.js';

/** The largest piece a message travels in (a frame bound, not a message bound: see DataRouter). */
export const PIECE = 4 << 20;
const CTRL_AUTH = 1;
export const CTRL_BYE = 2;
export const CTRL_WAKE = 3;
/** "Your goodbye arrived": everything sent before it did too (one connection keeps order). */
export const CTRL_BYE_ACK = 4;

export function dataProof(secret: Buffer, from: number, to: number, nonce: Buffer): Buffer {
  return createHmac('sha256', secret).update(`tprun/data\0${from}\0${to}\0`).update(nonce).digest();
}

export interface RouterEvents {
  bye(rank: number): void;
  byeAck(rank: number): void;
  wake(): void;
  fail(err: Error): void;
  log(msg: string): void;
}

/** The receiving side: one listening socket for every peer's link. */
export class DataRouter {
  private byRid = new Map<string, number>();
  private authed = new Set<number>();
  private warned = new Set<string>();

  constructor(
    private me: number,
    private secret: Buffer,
    readonly nonce: Buffer,
    private inbox: Inbox,
    private events: RouterEvents,
    readonly sock: MessageServer,
  ) {}

  start(): void {
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      for (;;) this.onMessage(await this.sock.receive());
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
      if (h.len) dst.set(payload);
      this.inbox.landed(src, h);
    } catch (e) {
      this.events.fail(e as Error);
    }
  }

  private refuse(routingId: Buffer, why: string): void {
    const rid = routingId.toString('hex');
    if (this.warned.has(rid) || this.warned.size >= 50) return; // once per connection; junk must not flood the log
    this.warned.add(rid);
    this.events.log(`tprun: rank ${this.me} refused a data connection from ${this.sock.whereIs(routingId)}: ${why}`);
  }

  close(): void {
    this.sock.close();
  }
}

/** The sending side towards one peer, plus its liveness; `transmit` is the carrier's. */
export abstract class PeerLink {
  private q: { frames: Frame[]; done?: () => void }[] = [];
  private busy = false;

  constructor(readonly peer: number) {}

  /** Sends one message; resolves once its frames may be reused. */
  protected abstract transmit(frames: Frame[]): Promise<void>;
  /** Ends the link after what is queued went out (bounded: the peer may be gone). */
  abstract close(): Promise<void>;
  /** Ends the link now. */
  abstract destroy(): void;

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

  wake(): void {
    this.control(CTRL_WAKE);
  }

  private control(b: number): void {
    const h = Buffer.alloc(HDR);
    writeHeader(h, { a: KIND_CTRL, b, total: 0, off: 0, len: 0 });
    this.push([h]);
  }

  /** Pieces of at most PIECE bytes; `done` once the last one went (the caller may reuse `data` then). */
  send(a: number, b: number, data: Uint8Array, done?: () => void, desc = 0): void {
    const total = data.byteLength;
    let off = 0;
    do {
      const len = Math.min(PIECE, total - off);
      const h = Buffer.alloc(HDR);
      writeHeader(h, { a, b, total, off, len, desc });
      const piece = this.piece(data.subarray(off, off + len));
      off += len;
      this.push([h, piece], off >= total ? done : undefined);
    } while (off < total);
  }

  /** What is queued of `data`: the bytes themselves, or a copy where the carrier reads them later. */
  protected piece(data: Uint8Array): Frame { return data; }

  get idle(): boolean {
    return !this.busy && this.q.length === 0;
  }

  private push(frames: Frame[], done?: () => void): void {
    this.q.push({ frames, done });
    if (!this.busy) void this.drain();
  }

  private async drain(): Promise<void> {
    this.busy = true;
    try {
      while (this.q.length) {
        const m = this.q.shift()!;
        await this.transmit(m.frames);
        m.done?.();
      }
    } catch {
      /* closed while sending: the world reports the peer */
    } finally {
      this.busy = false;
    }
  }

  /** Waits (bounded) until what is queued went out. */
  protected async drained(): Promise<void> {
    for (let i = 0; i < 200 && !this.idle; i++) await new Promise((r) => setTimeout(r, 5));
  }
}
