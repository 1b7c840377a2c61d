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
// +64 of its own file and sleeps in its event loop; a peer that moves data for it and sees a new epoch
// writes a byte to its wake-up socket (abstract Unix socket; ZeroMQ when that is missing), which costs
// about as much as spinning at 1 KiB instead of timer-granularity polling.
import { closeSync, openSync, readSync, unlinkSync, writeSync, writevSync, existsSync, ftruncateSync, statfsSync, readdirSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { HDR, readHeader, writeHeader, type Inbox, type PieceHeader } from './inbox.js';
import { cleanupOnEnd } from './scoped-cleanup.js';
import { areaBytes, oneShotBytes, warmCalls, warmShmAllReduce, type ArInfo } from './shm-allreduce.js';
import { transport } from './transport.js';
import { InputError } from '../core/errors.js';
import { wholeNumber } from '../util/env.js';
import { pidNamespace, processEnded } from '../util/proc.js';
import { RING_FILE_NAME, ringFileName } from './ring-name.js';

const FILE_HDR = 4096;
const INLINE = 4096;
/** Default slot: a 512 KiB payload plus its header; 8 slots per ordered pair of ranks. */
const SLOT_DEFAULT = (1 << 19) + 4096;
const SLOTS_DEFAULT = 8;
/** allReduce pipeline step: large enough that a step's syscalls and waits are noise, small enough that
 *  peers overlap (one reads step s while another writes s+1) and the area stays cache-friendly. */
const AR_STEP_DEFAULT = 2 << 20;

/** The ring geometry of one sender's file; receivers learn it at rendezvous. */
export interface ShmFileInfo {
  path: string;
  token: string;
  slot: number;
  slots: number;
  /** Abstract Unix socket where this rank takes wake-up bytes (one kernel wake-up straight into its
   *  event loop; a ZeroMQ message would go through ZeroMQ's I/O thread first). */
  wake?: string;
  /** The allReduce area after the rings (./shm-allreduce.ts), when there is room for one. */
  ar?: ArInfo;
}

const regionOf = (i: { slot: number; slots: number }) => 128 + i.slots * i.slot;
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

  /** `early`: whether this world sets its areas up early (worldStartsEarly, decided by its PeerWorld.start);
   *  advertised only with an area this file really has. */
  constructor(jobTag: string, rank: number, size: number, localSize: number, early = false) {
    // /dev/shm may be small (64 MiB in a default container): the rings of all local pairs may fill at
    // most half of what is free, with slots shrunk to fit; below 64 KiB a slot is not worth it.
    // Whole numbers (../util/env.ts): a bare Number() took '64k' for NaN, which turned the areas off without
    // a word. The caller (./links.ts) lets these refusals through where it takes other errors for "no shm".
    // Values the user set outside what the rings and areas can use (wire-schema.ts's bounds, a slot of
    // 64 KiB or more, an area step of 0 or 64 KiB or more) are refused; only /dev/shm's room shrinks them quietly.
    const within = (name: string, v: number, lo: number, hi: number, zero = false) => {
      if ((v < lo || v > hi) && !(zero && v === 0)) throw new InputError(`${name}=${v}: not ${zero ? '0 or ' : ''}a whole number from ${lo} to ${hi}`);
      return v;
    };
    let slot = within('TPRUN_SHM_SLOT_BYTES', wholeNumber('TPRUN_SHM_SLOT_BYTES', SLOT_DEFAULT), 65536, 1 << 30);
    const slots = within('TPRUN_SHM_SLOTS', wholeNumber('TPRUN_SHM_SLOTS', SLOTS_DEFAULT), 1, 65536);
    // The allReduce area takes 4 steps per rank, at most a quarter of what is free in all (0: no areas).
    let step = localSize > 1 ? within('TPRUN_SHM_AR_STEP', wholeNumber('TPRUN_SHM_AR_STEP', AR_STEP_DEFAULT), 65536, 1 << 30, true) : 0;
    try {
      const st = statfsSync('/dev/shm');
      const free = st.bavail * st.bsize;
      const budget = free / 2 / Math.max(1, localSize * (localSize - 1) * slots);
      slot = Math.min(slot, Math.floor(budget / 4096) * 4096);
      step = Math.min(step, Math.floor(free / 16 / localSize / 4096) * 4096);
    } catch { /* no statfs: keep the default */ }
    if (slot < 65536) throw new Error('not enough room in /dev/shm');
    step = Math.floor(step / 4096) * 4096;
    const oneShot = oneShotBytes(); // refused here, before a file exists, where it is bad
    const warmN = warmCalls(); // refused wherever it is bad, as oneShot; advertised only where the areas start early
    const warm = early ? warmN : undefined;
    sweepStale();
    const path = `/dev/shm/${ringFileName(jobTag, rank, process.pid, pidNamespace() ?? '0', randomBytes(4).toString('hex'))}`;
    const token = randomBytes(16).toString('hex');
    // The name lives until every peer has opened the file (a few ms after rendezvous, or as long as the
    // rendezvous waits); a rank that exits or is signalled in between removes it, one killed outright
    // (SIGKILL) leaves it to the next job's sweep.
    this.info = { path, token, slot, slots, wake: `\0tprun-${jobTag}-${rank}-${process.pid}-${randomBytes(4).toString('hex')}` };
    this.release = cleanupOnEnd(() => this.unlink());
    let fd: number | undefined;
    try {
      fd = openSync(path, 'wx+', 0o600);
      this.created = true;
      const rings = FILE_HDR + size * regionOf(this.info);
      if (step >= 65536) this.info.ar = { off: Math.ceil(rings / 4096) * 4096, step, early, oneShot, ...(warm === undefined ? {} : { warm }) };
      ftruncateSync(fd, this.info.ar ? this.info.ar.off + areaBytes(step) : rings);
      writeSync(fd, Buffer.from(token), 0, 32, 0);
      // Inside the try: a bad memory switch fails the world's start in one line and leaves no file.
      if (this.info.ar?.early) warmShmAllReduce();
    } catch (e) {
      if (fd !== undefined) closeSync(fd);
      this.unlink();
      throw e;
    }
    this.fd = fd;
  }

  static available(): boolean {
    return process.platform === 'linux' && existsSync('/dev/shm') && transport() === 'shm'; // TPRUN_TRANSPORT=zmq: every byte over ZeroMQ (./links.ts)
  }

  private release: () => void;
  /** Only a file this rank created is ever removed. */
  private created = false;

  /** Once every peer holds it open, the name can go: nothing is left behind even if we crash later. */
  unlink(): void {
    if (this.unlinked) return;
    this.unlinked = true;
    this.release();
    if (this.created) try { unlinkSync(this.info.path); } catch { /* already gone */ }
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

export { ringFileName } from './ring-name.js';

/** A name lives only while its job's rendezvous waits (TPRUN_COMM_TIMEOUT_MS, 10 minutes by default):
 *  an older tprun's file whose pid names nobody here is swept only once older than any sane wait, since
 *  it may belong to a live rank of another PID namespace. A killed older job's file costs /dev/shm room
 *  until then. */
const LEGACY_AGE_MS = 24 * 3600_000;

/**
 * Whether the sweep removes /dev/shm file `name`: a ring file whose creator is in OUR PID namespace
 * (`ns`) and gone; one of another namespace is left alone (its own namespace's next job sweeps it); an
 * older tprun's name only when its pid names nobody here and it is older than LEGACY_AGE_MS.
 */
export function staleRingFile(name: string, o: { ns: string; gone: (pid: number) => boolean; ageMs: () => number }): boolean {
  const m = RING_FILE_NAME.exec(name);
  if (!m) return false;
  if (m[2] !== undefined) return o.ns !== '0' && m[2] === o.ns && o.gone(Number(m[1]));
  return o.gone(Number(m[1])) && o.ageMs() > LEGACY_AGE_MS;
}

/** Removes ring files whose creator process is gone (killed between creating and unlinking them). */
function sweepStale(): void {
  try {
    const ns = pidNamespace() ?? '0';
    const now = Date.now();
    for (const name of readdirSync('/dev/shm')) {
      const path = `/dev/shm/${name}`;
      if (staleRingFile(name, { ns, gone: processEnded, ageMs: () => { try { return now - statSync(path).mtimeMs; } catch { return 0; } } })) try { unlinkSync(path); } catch { /* raced */ }
    }
  } catch { /* unreadable /dev/shm */ }
}

export function openPeerFile(info: ShmFileInfo): number | undefined {
  if (!(info.slot > HDR && info.slots > 0)) return undefined;
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
  private readonly inl: Uint8Array;

  private wokenEpoch = 0;

  private readonly out: { slot: number; slots: number; payload: number };
  private readonly in: { slot: number; slots: number };

  constructor(readonly peer: number, me: number, private outFd: number, private inFd: number, private inbox: Inbox,
    private wake: (peer: number) => void, mine: ShmFileInfo, theirs: ShmFileInfo) {
    this.out = { slot: mine.slot, slots: mine.slots, payload: mine.slot - HDR };
    this.in = { slot: theirs.slot, slots: theirs.slots };
    this.outBase = FILE_HDR + peer * regionOf(mine); // in my file, the region for this peer
    this.inBase = FILE_HDR + me * regionOf(theirs); // in the peer's file, the region for me
    this.inl = new Uint8Array(HDR + Math.min(INLINE, theirs.slot - HDR));
  }

  get idle(): boolean {
    return this.queue.length === 0;
  }

  /** Queue a message; `done` runs when its last byte is in the ring (the caller may then reuse `data`). */
  send(a: number, b: number, data: Uint8Array, done?: () => void, desc = 0): void {
    const total = data.byteLength;
    let off = 0;
    do {
      const len = Math.min(this.out.payload, total - off);
      const last = off + len >= total;
      this.queue.push({ h: { a, b, total, off, len, desc }, data: data.subarray(off, off + len), last, done: last ? done : undefined });
      off += len;
    } while (off < total);
  }

  /** Move whatever can move without waiting. Returns true when something moved. */
  pump(): boolean {
    let moved = false;
    // Outgoing: fill free slots.
    if (this.queue.length) {
      let free = this.out.slots - (this.wrote - this.peerRead);
      if (free === 0) {
        readSync(this.outFd, numB, 0, 8, this.outBase + 64);
        this.peerRead = num[0];
        free = this.out.slots - (this.wrote - this.peerRead);
      }
      let n = 0;
      while (free > 0 && this.queue.length) {
        const p = this.queue.shift()!;
        writeHeader(this.hdrBuf, p.h);
        const pos = this.outBase + 128 + (this.wrote % this.out.slots) * this.out.slot;
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
        const pos = this.inBase + 128 + (this.read % this.in.slots) * this.in.slot;
        readSync(this.inFd, this.inl, 0, this.inl.byteLength, pos);
        const h = readHeader(this.inl);
        const dst = this.inbox.target(this.peer, h);
        if (!dst) { /* refused: the slot is passed over */ } else if (h.len <= this.inl.byteLength - HDR) dst.set(this.inl.subarray(HDR, HDR + h.len));
        else readSync(this.inFd, dst, 0, h.len, pos + HDR);
        this.read++;
        this.inbox.landed(this.peer, h);
      }
      num[0] = this.read;
      writeSync(this.inFd, numB, 0, 8, this.inBase + 64);
      moved = true;
    }
    // The peer may be asleep waiting for exactly this (data, or free slots).
    if (moved) this.nudge();
    return moved;
  }

  /** Wake the peer if it sleeps (once per sleep): we moved something it may be waiting for. */
  nudge(): void {
    readSync(this.inFd, numB, 0, 8, 64);
    if (num[0] > this.wokenEpoch) {
      this.wokenEpoch = num[0];
      this.wake(this.peer);
    }
  }
  private doneQ?: (() => void)[];

  close(): void {
    try { closeSync(this.inFd); } catch { /* closed */ }
  }
}
