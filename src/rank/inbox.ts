// Where incoming messages land, keyed by (source rank, key). Receivers that post a destination first get
// the bytes written straight into it (shared memory reads land there with no intermediate copy);
// messages nobody asked for yet are kept in a buffer of their own until they are asked for.
// A message refused on arrival (too long, or not the length its receive posted) is dropped piece by piece
// and fails the receive it belongs to, as MPI reports a truncation at the receive: a rank still busy
// elsewhere (initWorld's start-up exchange, another peer's collective) must not be blamed for it.

import { mismatch } from './collective-check.js';
import { CommError } from './comm-error.js';

/** Wire header of one piece of a message (32 bytes). */
export const HDR = 32;
export interface PieceHeader {
  a: number;
  b: number;
  total: number;
  off: number;
  len: number;
  /** The sender's collective descriptor (./collective-check.ts); 0 for everything else. */
  desc?: number;
}
export function writeHeader(dst: Uint8Array, h: PieceHeader): void {
  const v = new DataView(dst.buffer, dst.byteOffset, HDR);
  v.setUint32(0, h.a, true);
  v.setUint32(4, h.b, true);
  v.setFloat64(8, h.total, true);
  v.setFloat64(16, h.off, true);
  v.setUint32(24, h.len, true);
  v.setUint32(28, h.desc ?? 0, true);
}
export function readHeader(src: Uint8Array): PieceHeader {
  const v = new DataView(src.buffer, src.byteOffset, HDR);
  return { a: v.getUint32(0, true), b: v.getUint32(4, true), total: v.getFloat64(8, true), off: v.getFloat64(16, true), len: v.getUint32(24, true), desc: v.getUint32(28, true) };
}

/** Key spaces (top bits of `a`): collectives by call sequence, point-to-point by tag, objects by tag. */
export const KIND_COLL = 0;
export const KIND_P2P = 0x40000000;
/**
 * Phase of a notice: "I am in collective #a, described so" (one small message, sent by a rank that waits
 * in the shared-memory allReduce for a peer that has not joined it). A peer in a message-path collective
 * #a of another kind then fails naming both, as it would on any message of #a; a peer in the same call
 * drops it. Without it, allReduce through the areas against, say, a broadcast on the peer waited both out
 * to the timeout (test/faults/rank-mismatch.test.js).
 */
export const NOTICE_PHASE = 2097151;
export const KIND_OBJ = 0x80000000;
export const KIND_CTRL = 0xc0000000;

interface Entry {
  total: number;
  got: number;
  buf?: Uint8Array;
  posted: boolean;
  complete: boolean;
  /** Collective descriptors: what the sender called (from its first piece) and what we called. */
  theirs?: number;
  mine?: number;
  /** Why the message was refused: its pieces are dropped, and waiting for it fails with this. */
  refused?: string;
  /** The sender's byte count, from its first piece: when the last piece of a dropped message has passed. */
  sent?: number;
  /** Given up by its receiver (forget): kept only to drop the pieces still on their way. */
  forgotten?: boolean;
}

/** A receive whose message was refused (Inbox.done throws it; the wait names the receive). */
export class RefusedMessage extends CommError {
  /** Whether it belonged to a collective: then the ranks' calls no longer line up. */
  constructor(message: string, readonly collective: boolean) {
    super(message);
  }
}

/** Collectives this rank has begun, by key, the latest few kept to check late arrivals. */
const STARTED_KEPT = 4096;

export class Inbox {
  private boxes: Map<number, Entry>[];
  /** Bumped on every completed message; waiters compare it instead of re-scanning. */
  version = 0;
  onDeliver?: () => void;

  private started = new Map<number, number>();
  private startedRing: (number | undefined)[] = new Array(STARTED_KEPT);
  private ringAt = 0;

  constructor(size: number, private maxBytes: number, private me = -1) {
    this.boxes = Array.from({ length: size }, () => new Map());
  }

  /** This rank begins collective #a described by `desc`: messages for it that came early must agree. */
  begin(a: number, desc: number): void {
    // Oldest out first, whatever the key: keys of several groups interleave, and a group's sequence wraps
    // (an entry left from before a wrap would fail the next round's early arrivals as mismatched).
    // A ring of keys rather than Map iteration order: iterating from a Map's front skips every entry
    // deleted there since its last rehash, which cost microseconds per small allReduce.
    const old = this.startedRing[this.ringAt];
    if (old !== undefined) this.started.delete(old);
    this.startedRing[this.ringAt] = a;
    this.ringAt = (this.ringAt + 1) % STARTED_KEPT;
    this.started.set(a, desc);
    for (let src = 0; src < this.boxes.length; src++) {
      // Nothing from src waits here (every shared-memory allReduce): no lookups under float keys.
      if (this.boxes[src].size === 0) continue;
      for (let b = 0; b < 2; b++) {
        const e = this.boxes[src].get(Inbox.key(a, b));
        if (e?.theirs && e.theirs !== desc) throw new CommError(mismatch(a, src, e.theirs, this.me, desc));
      }
      const k = Inbox.key(a, NOTICE_PHASE);
      const n = this.boxes[src].get(k);
      if (n) {
        this.boxes[src].delete(k);
        if (n.theirs && n.theirs !== desc) throw new CommError(mismatch(a, src, n.theirs, this.me, desc));
      }
    }
  }

  /** The descriptor of our collective #a, to send along with its messages (0 outside collectives). */
  descOf(a: number): number {
    return a < KIND_P2P ? this.started.get(a) ?? 0 : 0;
  }

  private check(src: number, a: number, e: Entry): void {
    const mine = e.mine ?? (a < KIND_P2P ? this.started.get(a) : undefined);
    if (e.theirs && mine && e.theirs !== mine) throw new CommError(mismatch(a, src, e.theirs, this.me, mine));
  }

  private static key(a: number, b: number): number {
    // a < 2^32, b < 2^21 in practice; a float64 key holds both exactly.
    return a * 2097152 + (b % 2097152);
  }

  /** Declare that (src, a, b) is wanted, optionally into `into`; `mine` describes our collective. */
  post(src: number, a: number, b: number, into?: Uint8Array, mine?: number): void {
    const k = Inbox.key(a, b);
    const box = this.boxes[src];
    let e = box.get(k);
    if (!e) {
      box.set(k, { total: into ? into.byteLength : -1, got: 0, buf: into, posted: true, complete: false, mine });
      return;
    }
    e.mine = mine;
    this.check(src, a, e);
    e.posted = true;
    if (into && e.buf !== into && !e.refused) {
      if (e.total !== into.byteLength) return this.refuse(e, lengthMismatch(src, e.total, into.byteLength));
      if (e.buf) into.set(e.buf.subarray(0, e.total));
      e.buf = into;
    }
  }

  private refuse(e: Entry, why: string): void {
    e.refused = why;
    e.buf = undefined;
    this.version++;
    this.onDeliver?.();
  }

  /** Where a piece must be written, or undefined to drop it (its message was refused: see `refused`). */
  target(src: number, h: PieceHeader): Uint8Array | undefined {
    const k = Inbox.key(h.a, h.b);
    const box = this.boxes[src];
    let e = box.get(k);
    if (!e) box.set(k, (e = { total: h.total, got: 0, posted: false, complete: false }));
    if (h.desc && !e.theirs) {
      e.theirs = h.desc;
      this.check(src, h.a, e);
    }
    if (h.off + h.len > h.total) throw new CommError(`rank ${src} sent a malformed piece`);
    e.sent ??= h.total;
    if (e.refused) return undefined;
    if (e.total === -1) e.total = h.total;
    // Checked before anything is allocated for it: the limit is what keeps a peer's bug from our memory.
    if (h.total > this.maxBytes) this.refuse(e, `rank ${src} sent a ${h.total}-byte message; the limit is ${this.maxBytes} (TPRUN_MAX_MESSAGE_BYTES)`);
    else if (e.total !== h.total) this.refuse(e, lengthMismatch(src, h.total, e.total));
    if (e.refused) return undefined;
    if (!e.buf) e.buf = new Uint8Array(h.total);
    return e.buf.subarray(h.off, h.off + h.len);
  }

  /** A piece was written into its target (or dropped, its message refused). */
  landed(src: number, h: PieceHeader): void {
    const k = Inbox.key(h.a, h.b);
    const e = this.boxes[src].get(k)!;
    e.got += h.len;
    if (e.refused) {
      if (e.forgotten && e.got >= e.sent!) this.boxes[src].delete(k);
      return;
    }
    // Point-to-point sequences reach this phase number too (every 2^21st message on one tag).
    if (h.b === NOTICE_PHASE && h.a < KIND_P2P) {
      // Checked in target() against a collective already begun (then dropped), or kept for begin() to check.
      if (this.started.has(h.a)) this.boxes[src].delete(Inbox.key(h.a, h.b));
      return;
    }
    if (e.got === e.total) {
      e.complete = true;
      this.version++;
      this.onDeliver?.();
    }
  }

  /** Whether (src, a, b) has arrived whole; throws RefusedMessage where it was refused. */
  done(src: number, a: number, b: number): boolean {
    const e = this.boxes[src].get(Inbox.key(a, b));
    if (e?.refused) throw new RefusedMessage(e.refused, a < KIND_P2P);
    return !!e && e.complete;
  }

  /** Removes a complete message and returns its bytes. */
  take(src: number, a: number, b: number): Uint8Array {
    const k = Inbox.key(a, b);
    const e = this.boxes[src].get(k)!;
    this.boxes[src].delete(k);
    return e.buf ?? new Uint8Array(0);
  }

  /** Forget posted-but-unfinished entries (after a failed collective) so their buffers are not written later. */
  /** Returns whether nothing of the message had come: then nothing is left of it here either. */
  forget(src: number, a: number, b: number): boolean {
    const k = Inbox.key(a, b);
    const e = this.boxes[src].get(k);
    if (!e) return true;
    // Nothing of it came (a timeout, say): nothing to drop either, and a peer that never sends it must not
    // leave an entry behind for good (a receive retried in a loop would pile them up).
    if (e.complete || e.sent === undefined || e.got >= e.sent) {
      this.boxes[src].delete(k);
      return e.sent === undefined;
    }
    // Its pieces still on their way are dropped as they come (not kept in a buffer nobody will take),
    // and the entry goes with the last of them.
    e.refused ??= 'the receive gave up';
    e.forgotten = true;
    e.buf = undefined;
    return false;
  }
}

function lengthMismatch(src: number, sent: number, expected: number): string {
  return `rank ${src} sent ${sent} bytes where ${expected} were expected (mismatched collective or recv length)`;
}

export { CommError };
