// Everything of the world that runs on ZeroMQ: the sockets of a world that spans machines (or runs under
// --secure, CurveZMQ), or of one forced onto ZeroMQ with TPRUN_TRANSPORT=zmq. Loaded only then
// (./links.ts): a world whose ranks all sit on one machine uses Node's Unix sockets (./unix-socket.ts)
// and never loads the zeromq addon. Data sockets: every rank binds one ROUTER, and connects one DEALER to
// each peer (./peer-link.ts); the DEALERs' disconnect events tell a rank that a peer died.
import * as zmq from 'zeromq';
import { CommError } from './inbox.js';
import { acquireAddressBook, labelClient, type AddressBookUse } from './address-book.js';
import { PIECE, PeerLink } from './peer-link.js';
import type { Frame, MessageClient, MessageServer } from './message-socket.js';

export interface Curve {
  serverPublic: string;
  serverSecret: string;
}

export { acquireAddressBook };

/** A ROUTER. It uses a security mechanism (PLAIN, or CURVE under --secure) only so that ZeroMQ shows each
 *  connection to the ZAP handler, which learns its address for refusal logs (./address-book.ts); the job
 *  secret is proven by HMAC exchanges above it. */
export class ZmqServer implements MessageServer {
  readonly sock: zmq.Router;

  constructor(opts: zmq.SocketOptions<zmq.Router>, curve: Curve | undefined, private book: AddressBookUse) {
    this.sock = new zmq.Router({ ...opts, zapDomain: 'tprun' });
    if (curve) {
      this.sock.curveServer = true;
      this.sock.curveSecretKey = curve.serverSecret;
    } else this.sock.plainServer = true;
  }

  async bind(ep: string): Promise<string> {
    await this.sock.bind(ep);
    return this.sock.lastEndpoint!;
  }

  receive(): Promise<Buffer[]> { return this.sock.receive(); }
  send(frames: Frame[]): Promise<void> { return this.sock.send(frames); }
  whereIs(id: Buffer): string { return this.book.whereIs(id); }
  get closed(): boolean { return this.sock.closed; }
  close(): void { this.sock.close(); }
  release(): void {
    this.sock.close();
    this.book.release();
  }
}

/** Rank 0's rendezvous socket. */
export async function zmqRendezvousServer(bind: string, curve: Curve | undefined): Promise<ZmqServer> {
  const book = await acquireAddressBook();
  const s = new ZmqServer({ linger: 1000, maxMessageSize: 1 << 20 }, curve, book);
  try {
    await s.bind(bind);
  } catch (e) {
    s.release();
    throw new CommError(`rank 0 cannot listen on ${bind}: ${(e as Error).message}`);
  }
  return s;
}

/** A joining rank's rendezvous socket. Ranks usually start before rank 0 listens (it starts at the same
 *  time, and may load more first): ZeroMQ's default 100 ms between connection attempts then made every
 *  launch wait up to 100 ms after rank 0 was ready (seen in `tprun bench launch` traces). */
export function zmqRendezvousClient(connect: string, curve: Curve | undefined): MessageClient {
  const sock = new zmq.Dealer({ linger: 1000, maxMessageSize: 16 << 20, reconnectInterval: 10 });
  labelClient(sock, curve);
  sock.connect(connect);
  return { receive: () => sock.receive(), send: (f) => sock.send(f), close: () => sock.close() };
}

/** A rank's data socket. ZeroMQ's own limit only guards the framing (no piece is ever larger than
 *  PIECE): over it, ZeroMQ silently drops the connection, the sender reconnects unauthenticated and the
 *  error blames the wrong rank. TPRUN_MAX_MESSAGE_BYTES is enforced on each message's declared total
 *  instead (Inbox.target), which names the sender and the limit, as the shared-memory plane does. */
export function zmqDataServer(curve: Curve | undefined, book: AddressBookUse): ZmqServer {
  return new ZmqServer({ linger: 0, maxMessageSize: PIECE + 4096 }, curve, book);
}

/** The sending side towards one peer over ZeroMQ, plus its liveness. */
export class ZmqLink extends PeerLink {
  readonly sock: zmq.Dealer;
  private closing = false;

  constructor(peer: number, endpoint: string, onDisconnect: (peer: number) => void, curve?: Curve) {
    super(peer);
    this.sock = new zmq.Dealer({ linger: 2000, heartbeatInterval: 2000, heartbeatTimeout: 10000, immediate: false });
    labelClient(this.sock, curve);
    this.sock.events.on('disconnect', () => {
      if (!this.closing) onDisconnect(peer);
    });
    // Connection refusals are not disconnects: the peer may not listen yet; keep quiet until it does.
    this.sock.connect(endpoint);
  }

  protected transmit(frames: Frame[]): Promise<void> { return this.sock.send(frames); }

  // zeromq.js sends large buffers zero-copy (the I/O thread reads them later); copying here lets the
  // caller reuse its array as soon as `done` runs.
  protected override piece(data: Uint8Array): Frame { return Buffer.from(data); }

  async close(): Promise<void> {
    // Let queued messages (BYE included) go out before the socket closes.
    await this.drained();
    this.closing = true;
    this.sock.linger = 200; // what is still queued is for a peer that is gone or about to close
    this.sock.close(); // its observer ends with it
  }

  destroy(): void {
    this.closing = true;
    if (!this.sock.closed) this.sock.close();
  }
}
