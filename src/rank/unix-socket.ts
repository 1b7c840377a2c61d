// ZeroMQ's multipart messages over Node's own Unix domain sockets, for a world whose ranks all sit on one
// machine: its rendezvous and each pair's liveness link then need no native addon (loading zeromq costs
// a process ~8 ms of CPU and a socket pair ~8 ms more; in `tprun bench launch`'s rank profiles it was the
// largest library, docs/performance.md). The sockets live in a directory only this
// user can enter (identity.ts privateDir, or Open MPI's per-job session directory), so other users
// cannot even connect; same-user strangers still meet the job secret's HMAC handshakes above this
// (./rendezvous.ts, ./peer-link.ts), as over ZeroMQ.
//
// On the stream a message is [u32 frame count] then per frame [u32 length][bytes], little-endian.
// A message over the reader's limit, or a frame count of 0 or over 64, ends that connection.
import net from 'node:net';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import type { Frame, MessageClient, MessageServer } from './message-socket.js';
import { cleanupOnEnd } from './scoped-cleanup.js';

const MAX_FRAMES = 64;
/** Between connection attempts while a server is not listening yet (as the ZeroMQ path's reconnectInterval). */
const RETRY_MS = 10;

const asBuf = (f: Frame): Buffer => (typeof f === 'string' ? Buffer.from(f, 'latin1')
  : Buffer.isBuffer(f) ? f : Buffer.from(f.buffer, f.byteOffset, f.byteLength));

/** Frames at least this large are written as they are; smaller ones are copied into one write with the lengths. */
const BIG_FRAME = 16384;

/** Writes one message; resolves once Node handed its bytes to the kernel (the frames may be reused then). */
function writeMessage(s: net.Socket, frames: Frame[]): Promise<void> {
  const bufs = frames.map(asBuf);
  if (!bufs.length) return Promise.reject(new Error('a message without frames'));
  // One write for the lengths and the small frames around each large one, which goes out uncopied.
  const writes: Buffer[] = [];
  let small: Buffer[] = [];
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32LE(bufs.length, 0);
  small.push(count);
  for (const b of bufs) {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(b.length, 0);
    small.push(len);
    if (b.length < BIG_FRAME) small.push(b);
    else {
      writes.push(Buffer.concat(small), b);
      small = [];
    }
  }
  if (small.length) writes.push(Buffer.concat(small));
  return new Promise((res, rej) => {
    if (s.destroyed) return rej(new Error('socket closed'));
    const cb = (e?: Error | null) => (e ? rej(e) : res());
    if (writes.length === 1) { s.write(writes[0], cb); return; }
    s.cork();
    writes.forEach((w, i) => s.write(w, i === writes.length - 1 ? cb : undefined));
    s.uncork();
  });
}

/** Cuts a byte stream into messages. */
class MessageReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private count = -1;
  private len = -1;
  private frames: Buffer[] = [];
  private bytes = 0;

  constructor(private maxBytes: number, private onMessage: (frames: Buffer[]) => void) {}

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - off);
        c.copy(out, off, 0, k);
        off += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.have -= n;
    return out;
  }

  /** Throws on a message this reader refuses. */
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.have += chunk.length;
    for (;;) {
      if (this.count < 0) {
        if (this.have < 4) return;
        this.count = this.take(4).readUInt32LE(0);
        if (this.count < 1 || this.count > MAX_FRAMES) throw new Error(`malformed message (${this.count} frames)`);
        this.frames = [];
        this.bytes = 0;
      } else if (this.len < 0) {
        if (this.have < 4) return;
        this.len = this.take(4).readUInt32LE(0);
        this.bytes += this.len;
        if (this.bytes > this.maxBytes) throw new Error(`message over ${this.maxBytes} bytes`);
      } else {
        if (this.have < this.len) return;
        this.frames.push(this.len ? this.take(this.len) : Buffer.alloc(0));
        this.len = -1;
        if (this.frames.length === this.count) {
          const f = this.frames;
          this.count = -1;
          this.frames = [];
          this.onMessage(f);
        }
      }
    }
  }
}

/** Messages waiting for a receive() and receives waiting for a message. */
class Mailbox {
  private q: Buffer[][] = [];
  private waiting: { res: (m: Buffer[]) => void; rej: (e: Error) => void }[] = [];
  private ended?: Error;

  put(m: Buffer[]): void {
    const w = this.waiting.shift();
    if (w) w.res(m);
    else this.q.push(m);
  }

  receive(): Promise<Buffer[]> {
    if (this.q.length) return Promise.resolve(this.q.shift()!);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((res, rej) => this.waiting.push({ res, rej }));
  }

  end(e: Error): void {
    this.ended ??= e;
    for (const w of this.waiting.splice(0)) w.rej(this.ended);
  }
}

const isSocketFile = (path: string) => {
  try { return lstatSync(path).isSocket(); } catch { return false; }
};

export interface UnixServerOptions {
  /** Largest message a client may send; a larger one ends its connection. */
  maxMessageBytes: number;
  /** A client's connection was ended for what it sent (it was not a rank of this job, or is broken). */
  refused?: (where: string, why: string) => void;
  /** Whether the listening socket holds the process's event loop (a world's data socket does, as ZeroMQ's did). */
  ref?: boolean;
}

/** A listening Unix socket at `path`. A socket file left there by a process that died is replaced, as
 *  ZeroMQ's ipc transport does; anything else at `path` is an error. */
export async function listenUnix(path: string, o: UnixServerOptions): Promise<UnixServer> {
  if (isSocketFile(path)) unlinkSync(path);
  const s = new UnixServer(path, o);
  try {
    await new Promise<void>((res, rej) => {
      s.server.once('error', rej);
      s.server.listen(path, () => { s.server.off('error', rej); res(); });
    });
  } catch (e) {
    s.close(); // the name (if any) is not ours: left alone
    throw e;
  }
  s.listening();
  if (o.ref === false) s.server.unref();
  return s;
}

export class UnixServer implements MessageServer {
  readonly server: net.Server;
  private conns = new Map<string, net.Socket>();
  private box = new Mailbox();
  private next = 0;
  private linked = false;
  private forget?: () => void;
  closed = false;

  constructor(readonly path: string, private o: UnixServerOptions) {
    this.server = net.createServer((c) => this.accept(c));
    this.server.on('error', () => undefined);
  }

  private accept(c: net.Socket): void {
    if (this.closed) { c.destroy(); return; }
    const id = Buffer.alloc(4);
    id.writeUInt32BE(++this.next);
    const key = id.toString('hex');
    this.conns.set(key, c);
    c.unref();
    c.setNoDelay?.(true);
    const reader = new MessageReader(this.o.maxMessageBytes, (f) => this.box.put([id, ...f]));
    c.on('data', (d) => {
      try {
        reader.push(d);
      } catch (e) {
        this.o.refused?.(this.whereIs(id), (e as Error).message);
        c.destroy();
      }
    });
    c.on('error', () => undefined);
    c.on('close', () => this.conns.delete(key));
  }

  receive(): Promise<Buffer[]> { return this.box.receive(); }

  async send(frames: Frame[]): Promise<void> {
    const c = this.conns.get(asBuf(frames[0]).toString('hex'));
    if (!c) return;
    await writeMessage(c, frames.slice(1)).catch(() => undefined);
  }

  whereIs(_id: Buffer): string {
    return `a process on this machine (Unix socket ${this.path})`;
  }

  /** The name is ours from now on. It goes however the process ends (a signal too); one killed
   *  outright leaves it to the next listener at the same path, or in the private directory. */
  listening(): void {
    this.linked = true;
    this.forget = cleanupOnEnd(() => this.unlink());
  }

  /** Removes the socket's name: clients that connected keep their connections, no new one can come. */
  unlink(): void {
    if (!this.linked) return;
    this.linked = false;
    this.forget?.();
    try { unlinkSync(this.path); } catch { /* gone already */ }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    this.unlink();
    // end(): what was written still goes out before the connection closes (the rendezvous's last replies).
    for (const c of this.conns.values()) c.end();
    this.box.end(new Error('socket closed'));
  }

  release(): void { this.close(); }
}

export interface UnixClientOptions {
  maxMessageBytes: number;
  /** Keep trying while nothing listens at the path yet (the rendezvous: rank 0 may start last). Without
   *  it a server that is not there is a disconnect: the data socket of a peer that already rendezvoused. */
  retry: boolean;
  /** The connection ended without close() being called: the peer exited or crashed. */
  onDisconnect?: () => void;
}

export class UnixClient implements MessageClient {
  private sock?: net.Socket;
  private ready: Promise<net.Socket>;
  private box = new Mailbox();
  private closing = false;
  private timer?: NodeJS.Timeout;
  private queued: Buffer[][] = [];

  constructor(readonly path: string, private o: UnixClientOptions) {
    this.ready = new Promise((res, rej) => this.attempt(res, rej));
    this.ready.catch(() => undefined);
  }

  private attempt(res: (s: net.Socket) => void, rej: (e: Error) => void): void {
    if (this.closing) return rej(new Error('socket closed'));
    // While the name is not there yet, a stat is all a try costs (a socket object and its error event
    // are ~10x that, and joining ranks often wait tens of ms for rank 0 on a loaded machine).
    if (this.o.retry && !existsSync(this.path)) {
      this.timer = setTimeout(() => this.attempt(res, rej), RETRY_MS);
      return;
    }
    const s = net.connect(this.path);
    s.setNoDelay?.(true);
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (this.sock === s) return; // after connecting: 'close' follows
      s.destroy();
      if (this.o.retry && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') && !this.closing) {
        this.timer = setTimeout(() => this.attempt(res, rej), RETRY_MS);
        return;
      }
      this.box.end(e);
      rej(e);
      if (!this.closing) this.o.onDisconnect?.();
    });
    s.once('connect', () => {
      if (this.closing) { s.destroy(); rej(new Error('socket closed')); return; } // closed while connecting
      // What was queued goes first, in order.
      for (const m of this.queued.splice(0)) writeMessage(s, m).catch(() => undefined);
      this.sock = s;
      s.on('error', () => undefined);
      if (!this.o.retry) s.unref();
      const reader = new MessageReader(this.o.maxMessageBytes, (f) => this.box.put(f));
      s.on('data', (d) => {
        try { reader.push(d); } catch (e) { this.box.end(e as Error); s.destroy(); }
      });
      s.on('close', () => {
        this.box.end(new Error(`the connection to ${this.path} closed`));
        if (!this.closing) this.o.onDisconnect?.();
      });
      res(s);
    });
  }

  get connected(): Promise<void> { return this.ready.then(() => undefined); }

  receive(): Promise<Buffer[]> { return this.box.receive(); }

  /** Before the connection is made, the message is copied and queued (as ZeroMQ queues it), so a
   *  rendezvous that waits for an answer runs its timeouts and warnings even while nobody listens. */
  send(frames: Frame[]): Promise<void> {
    if (this.sock) return writeMessage(this.sock, frames);
    this.queued.push(frames.map((f) => Buffer.from(asBuf(f))));
    return Promise.resolve();
  }

  /** Bytes written but not yet taken by the kernel. */
  get pending(): number { return this.sock?.writableLength ?? 0; }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.timer);
    this.box.end(new Error('socket closed'));
    // end(): bytes already written (a goodbye) still go out.
    this.sock?.end();
  }
}
