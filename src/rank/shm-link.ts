// Same-machine data plane: one file in /dev/shm per sending rank, a ring of slots per receiving rank,
// moved with pread/pwrite. Node cannot map memory without a native addon, but a tmpfs file read and
// written through positional syscalls costs ~1 µs per call: a one-way 1 KiB message takes a few µs,
// against ~40 µs for a ZeroMQ ipc hop (which needs an I/O-thread handoff and an event-loop wakeup).
//
// Layout of rank s's file: [4096-byte header: token] then one region per destination rank d:
//   +0  writeCount (float64, written by s)      +64 readCount (float64, written by d)
//   +128 K slots of SLOT bytes: [32-byte piece header][payload]
// A slot's bytes are written before writeCount is bumped (separate syscalls, so a reader that sees the
// new count sees the slot), and a slot is reused only after readCount says the reader is done with it.
// Waiting: a rank first spins on the counters; when that takes too long it publishes a sleep epoch at
// +64 of its own file and blocks on its ZeroMQ socket; a peer that moves data for it and sees a new
// epoch sends it a wake-up message (a few tens of µs, instead of timer-granularity polling).
import { closeSync, openSync, readSync, unlinkSync, writeSync, writevSync, existsSync, ftruncateSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { HDR, readHeader, writeHeader, type Inbox, type PieceHeader } from './inbox.js';

const FILE_HDR = 4096;
const envInt = (name: string, dflt: number) => (process.env[name] ? Number(process.env[name]) : dflt);
export const SLOT = envInt('TPRUN_SHM_SLOT_BYTES', 1 << 19);
export const SLOTS = envInt('TPRUN_SHM_SLOTS', 8);
const REGION = 128 + SLOTS * SLOT;
const INLINE = 4096;
export const SHM_PAYLOAD = SLOT - HDR;

export interface ShmFileInfo {
  path: string;
  token: string;
}

interface Pending {
  h: PieceHeader;
  data: Uint8Array;
  last: boolean;
  done?: () => void;
}

/** This rank's outgoing file. */
export class ShmOut {
  readonly fd: number;
  readonly info: ShmFileInfo;
  private unlinked = false;

  constructor(jobTag: string, rank: number, size: number) {
    const path = `/dev/shm/tprun-${jobTag}-${rank}-${randomBytes(4).toString('hex')}`;
    const token = randomBytes(16).toString('hex');
    this.fd = openSync(path, 'wx+', 0o600);
    ftruncateSync(this.fd, FILE_HDR + size * REGION);
    writeSync(this.fd, Buffer.from(token), 0, 32, 0);
    this.info = { path, token };
  }

  static available(): boolean {
    return process.platform === 'linux' && existsSync('/dev/shm') && process.env.TPRUN_TRANSPORT !== 'zmq';
  }

  /** Once every peer holds it open, the name can go: nothing is left behind even if we crash later. */
  unlink(): void {
    if (this.unlinked) return;
    this.unlinked = true;
    try { unlinkSync(this.info.path); } catch { /* already gone */ }
  }

  /** Publish "asleep since epoch e" (0 = awake) for peers that move data for us. */
  setSleeping(e: number): void {
    num[0] = e;
    writeSync(this.fd, numB, 0, 8, 64);
  }

  close(): void {
    this.unlink();
    try { closeSync(this.fd); } catch { /* closed */ }
  }
}

export function openPeerFile(info: ShmFileInfo): number | undefined {
  try {
    const fd = openSync(info.path, 'r+');
    const b = Buffer.alloc(32);
    readSync(fd, b, 0, 32, 0);
    if (b.toString() !== info.token) {
      closeSync(fd);
      return undefined;
    }
    return fd;
  } catch {
    return undefined;
  }
}

const num = new Float64Array(1);
const numB = new Uint8Array(num.buffer);

/** Both directions between this rank and one peer on the same machine. */
export class ShmLink {
  private queue: Pending[] = [];
  private wrote = 0;
  private peerRead = 0;
  private read = 0;
  private readonly outBase: number;
  private readonly inBase: number;
  private readonly hdrBuf = new Uint8Array(HDR);
  private readonly inl = new Uint8Array(HDR + INLINE);

  private wokenEpoch = 0;

  constructor(readonly peer: number, me: number, private outFd: number, private inFd: number, private inbox: Inbox,
    private wake: (peer: number) => void) {
    this.outBase = FILE_HDR + peer * REGION; // in my file, the region for this peer
    this.inBase = FILE_HDR + me * REGION; // in the peer's file, the region for me
  }

  get idle(): boolean {
    return this.queue.length === 0;
  }

  /** Queue a message; `done` runs when its last byte is in the ring (the caller may then reuse `data`). */
  send(a: number, b: number, data: Uint8Array, done?: () => void): void {
    const total = data.byteLength;
    let off = 0;
    do {
      const len = Math.min(SHM_PAYLOAD, total - off);
      const last = off + len >= total;
      this.queue.push({ h: { a, b, total, off, len }, data: data.subarray(off, off + len), last, done: last ? done : undefined });
      off += len;
    } while (off < total);
  }

  /** Move whatever can move without waiting. Returns true when something moved. */
  pump(): boolean {
    let moved = false;
    // Outgoing: fill free slots.
    if (this.queue.length) {
      let free = SLOTS - (this.wrote - this.peerRead);
      if (free === 0) {
        readSync(this.outFd, numB, 0, 8, this.outBase + 64);
        this.peerRead = num[0];
        free = SLOTS - (this.wrote - this.peerRead);
      }
      let n = 0;
      while (free > 0 && this.queue.length) {
        const p = this.queue.shift()!;
        writeHeader(this.hdrBuf, p.h);
        const pos = this.outBase + 128 + (this.wrote % SLOTS) * SLOT;
        if (p.h.len) writevSync(this.outFd, [this.hdrBuf, p.data], pos);
        else writeSync(this.outFd, this.hdrBuf, 0, HDR, pos);
        this.wrote++;
        free--;
        n++;
        if (p.done) (this.doneQ ??= []).push(p.done);
      }
      if (n) {
        num[0] = this.wrote;
        writeSync(this.outFd, numB, 0, 8, this.outBase);
        moved = true;
        const dq = this.doneQ;
        this.doneQ = undefined;
        if (dq) for (const d of dq) d();
      }
    }
    // Incoming: drain ready slots.
    readSync(this.inFd, numB, 0, 8, this.inBase);
    const avail = num[0];
    if (avail > this.read) {
      while (this.read < avail) {
        const pos = this.inBase + 128 + (this.read % SLOTS) * SLOT;
        readSync(this.inFd, this.inl, 0, HDR + INLINE, pos);
        const h = readHeader(this.inl);
        const dst = this.inbox.target(this.peer, h);
        if (h.len <= INLINE) dst.set(this.inl.subarray(HDR, HDR + h.len));
        else readSync(this.inFd, dst, 0, h.len, pos + HDR);
        this.read++;
        this.inbox.landed(this.peer, h);
      }
      num[0] = this.read;
      writeSync(this.inFd, numB, 0, 8, this.inBase + 64);
      moved = true;
    }
    if (moved) {
      // The peer may be asleep waiting for exactly this (data, or free slots): wake it once per sleep.
      readSync(this.inFd, numB, 0, 8, 64);
      if (num[0] > this.wokenEpoch) {
        this.wokenEpoch = num[0];
        this.wake(this.peer);
      }
    }
    return moved;
  }
  private doneQ?: (() => void)[];

  close(): void {
    try { closeSync(this.inFd); } catch { /* closed */ }
  }
}
