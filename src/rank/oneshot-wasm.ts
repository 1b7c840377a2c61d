// The one-exchange allReduce of ./shm-allreduce.ts (ShmAllReduce.oneShot) as one WebAssembly call, for the
// plane whose areas are mapped into the SIMD arena's memory. A short call was a few dozen small JavaScript
// functions (counter loads, the header, the spins, the checks, the reduction's dispatch); a fresh process
// runs those in V8's interpreter for its first thousands of calls, at about twice the time they take once
// optimized (issue #14). Wasm runs compiled from its first call (V8's baseline compiler when the module
// is made, its optimizing one in the background), so this part of a call is fast from the start; what
// JavaScript is left around it (the collective's frame, the copies in and out) still warms up. The module
// is made per world and per (dtype, op), with the world's layout (every rank's area in the arena) as
// constants, so the code only loads, compares and stores.
//
// It does what the JavaScript does, in the same order, and where it cannot finish alone (a peer late past
// its spin, a peer that may sleep and must be woken, a header that disagrees) it returns where it stopped
// and the JavaScript path carries on from there: one protocol, two ways to run it. Which way a call ends
// depends on timing, so both must give the same bits: this reduces the tail that does not fill a vector
// with the vector op too, and the JavaScript's scalar max/min follow the vector ops' rules (-0 below +0,
// a NaN wins; only a NaN's payload may differ).
import type { CommDType, ReduceOp } from './types.js';
import { body3, simdOpcode, UNROLL } from './simd.js';
import { cat, leb, sleb, vec, str, section } from '../util/wasm-encode.js';

/** Offsets from an area's start (./shm-allreduce.ts's layout) and where things are in the arena. */
export interface OneShotLayout {
  me: number;
  /** Rank r's area starts at at[r] in the arena. */
  at: number[];
  /** The input areas' size (inputs of parity p at DATA + p * step). */
  step: number;
  W: number;
  D: number;
  G: number;
  HEAD: number;
  ASLEEP: number;
  DATA: number;
  /** Where the result goes (one step of private arena memory). */
  scratch: number;
  /** Where the caller copies its input before the call (private; the call moves it into the area once the area is free). */
  stage: number;
  /** Rank r's sleep epoch (a float64, non-zero while it may sleep in the world's wait) is at epochs[r]. */
  epochs: number[];
}

/** What a call returns: how far it got. */
export const OneShot = {
  /** Reduced into scratch; counters published; no peer said it sleeps. */
  Done: 0,
  /** Our input area is still being read by a peer (previous call): nothing written. */
  AreaBusy: 1,
  /** Input, header and W counter published; a peer is late (or may sleep, and must be woken first). */
  Published: 2,
  /** Every peer arrived but a header disagrees: nothing reduced. */
  Mismatch: 3,
  /** As Done, but a peer said it sleeps: it must be woken. */
  DoneWake: 4,
} as const;
export type OneShot = (typeof OneShot)[keyof typeof OneShot];

/** (generation, seq, desc, bytes, spins) → OneShot. spins ≥ 1: loads of the peers' counters before giving up a wait. */
export type OneShotFn = (g: number, seq: number, desc: number, nbytes: number, spins: number) => OneShot;

// Opcodes (WebAssembly core spec §5.4): locals, i32 arithmetic, memory, control; 0xfe atomics, 0xfc bulk memory.
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const tee = (i: number) => [0x22, i];
const i32 = (v: number) => cat(0x41, sleb(v | 0));
const ADD = 0x6a;
const SUB = 0x6b;
const MUL = 0x6c;
const AND = 0x71;
const OR = 0x72;
const SHL = 0x74;
const NE = 0x47;
const GE_S = 0x4e;
const I64_NE = 0x52;
const RETURN = 0x0f;
const END = 0x0b;
/** memarg: alignment exponent and a constant offset (added to the address operand, unsigned). */
const load32 = (off: number) => cat(0x28, 2, leb(off));
const store32 = (off: number) => cat(0x36, 2, leb(off));
const load64 = (off: number) => cat(0x29, 3, leb(off));
/** Sequentially consistent, as Atomics.load/store on the JavaScript side; allowed on unshared memory. */
const atomicLoad32 = (off: number) => cat(0xfe, 0x10, 2, leb(off));
const atomicStore32 = (off: number) => cat(0xfe, 0x17, 2, leb(off));
const memoryCopy = [0xfc, 10, 0, 0];

// Parameters and locals of the call.
const G_ = 0;
const SEQ = 1;
const DESC = 2;
const NBYTES = 3;
const SPINS = 4;
const LEFT = 5; // spins left in the current wait
const IN_OFF = 6; // p * step
const HEAD_OFF = 7; // p * 64

/**
 * The module's functions: 0 and 1 the 1- and 4-vector loops of ./simd.ts, 2 `red(d, a, b, n)` (both, for
 * any multiple of 16 bytes), 3 the call.
 */
function moduleBytes(L: OneShotLayout, opcode: number): Uint8Array<ArrayBuffer> {
  const R = L.at.length;
  const peers = Array.from({ length: R - 1 }, (_, k) => (L.me + 1 + k) % R);
  const wide = 16 * UNROLL;

  // red: w = n & -wide; f4(d, a, b, w); f1(d + w, a + w, b + w, n - w)
  const red = cat(
    get(3), i32(-wide), AND, set(4),
    get(0), get(1), get(2), get(4), 0x10, 1,
    get(0), get(4), ADD, get(1), get(4), ADD, get(2), get(4), ADD, get(3), get(4), SUB, 0x10, 0,
    END,
  );

  /** Every peer's counter at `off` has reached the target (wrapping compare: (c - t) | 0 >= 0), as one i32. */
  const arrived = (off: number, target: number[]) => cat(...peers.map((r, k) => cat(
    i32(0), atomicLoad32(L.at[r] + off), target, SUB, i32(0), GE_S, k > 0 ? [AND] : [],
  )));
  /** Spin until arrived, up to SPINS loads; else return `code`. */
  const wait = (off: number, target: number[], code: OneShot) => cat(
    get(SPINS), set(LEFT),
    0x02, 0x40, 0x03, 0x40,
    arrived(off, target), 0x0d, 1,
    get(LEFT), i32(1), SUB, tee(LEFT), 0x0d, 0,
    END, i32(code), RETURN, END,
  );
  /** Whether a peer said it may sleep: on our doorbell (ASLEEP) or in the world's wait (its epoch). */
  const anySleeper = () => cat(...peers.map((r, k) => cat(
    i32(0), atomicLoad32(L.at[r] + L.ASLEEP), i32(0), NE,
    i32(0), load64(L.epochs[r]), 0x42, 0, I64_NE, OR,
    k > 0 ? [OR] : [],
  )));
  /** A peer's header (seq, desc, bytes) for this parity differs from ours, as one i32. */
  const mismatch = () => cat(...peers.map((r, k) => cat(
    get(HEAD_OFF), load32(L.at[r] + L.HEAD), get(SEQ), NE,
    get(HEAD_OFF), load32(L.at[r] + L.HEAD + 4), get(DESC), NE, OR,
    get(HEAD_OFF), load32(L.at[r] + L.HEAD + 8), get(NBYTES), NE, OR,
    k > 0 ? [OR] : [],
  )));
  const input = (r: number) => cat(get(IN_OFF), i32(L.at[r] + L.DATA), ADD);
  const me = L.at[L.me];

  const call = cat(
    // p = g & 1: the parity's input area and header.
    get(G_), i32(1), AND, tee(HEAD_OFF), i32(L.step), MUL, set(IN_OFF),
    get(HEAD_OFF), i32(6), SHL, set(HEAD_OFF),
    // Our input area's previous user, generation g - 2, must have been reduced by every peer.
    wait(L.D, cat(get(G_), i32(2), SUB), OneShot.AreaBusy),
    input(L.me), i32(L.stage), get(NBYTES), memoryCopy,
    get(HEAD_OFF), get(SEQ), store32(me + L.HEAD),
    get(HEAD_OFF), get(DESC), store32(me + L.HEAD + 4),
    get(HEAD_OFF), get(NBYTES), store32(me + L.HEAD + 8),
    i32(0), get(G_), atomicStore32(me + L.W),
    // A peer that may sleep must be woken before we wait for it: that is the JavaScript's to do.
    anySleeper(), 0x04, 0x40, i32(OneShot.Published), RETURN, END,
    wait(L.W, get(G_), OneShot.Published),
    mismatch(), 0x04, 0x40, i32(OneShot.Mismatch), RETURN, END,
    // In rank order into scratch, whole vectors: the bytes past nbytes (up to the next 16) are reduced
    // too, from within the areas, and never copied out.
    ...Array.from({ length: R - 1 }, (_, k) => cat(
      i32(L.scratch), k === 0 ? input(0) : i32(L.scratch), input(k + 1), get(NBYTES), i32(15), ADD, i32(-16), AND, 0x10, 2,
    )),
    i32(0), get(G_), atomicStore32(me + L.D),
    i32(0), get(G_), atomicStore32(me + L.G),
    anySleeper(), 0x04, 0x40, i32(OneShot.DoneWake), RETURN, END,
    i32(OneShot.Done),
    END,
  );

  const entry = (locals: number[][], code: number[]) => {
    const body = cat(vec(locals), code);
    return cat(leb(body.length), body);
  };
  return new Uint8Array(cat(
    [0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    section(1, vec([[0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 0], [0x60, 5, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f]])),
    section(2, vec([cat(str('env'), str('mem'), 0x02, 0x00, 0x00)])),
    section(3, vec([[0], [0], [0], [1]])),
    section(7, vec([cat(str('run'), 0x00, 3)])),
    section(10, cat(leb(4), body3(opcode, 1), body3(opcode, UNROLL), entry([[1, 0x7f]], red), entry([[3, 0x7f]], call))),
  ));
}

/** The call for (dtype, op) over this layout, in `mem`; undefined where wasm has no such vector op or the module fails to build. */
export function oneShotFn(L: OneShotLayout, mem: WebAssembly.Memory, dtype: CommDType, op: ReduceOp): OneShotFn | undefined {
  const opcode = simdOpcode(dtype, op);
  if (opcode === undefined || L.at.length < 2) return undefined;
  try {
    const inst = new WebAssembly.Instance(new WebAssembly.Module(moduleBytes(L, opcode)), { env: { mem } });
    return inst.exports.run as unknown as OneShotFn;
  } catch {
    return undefined;
  }
}
