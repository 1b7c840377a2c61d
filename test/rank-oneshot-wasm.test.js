// The one-exchange allReduce as one WebAssembly call (src/rank/oneshot-wasm.ts), in one process: peers'
// areas are laid out by hand in a SIMD arena and set to each state the call can meet (area still in use,
// peer late, peer asleep, headers that disagree, all there), and the call must stop where the JavaScript
// path (src/rank/shm-allreduce.ts, ShmAllReduce.oneShot) carries on, having written exactly what it says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimdArena } from '../dist/rank/simd.js';
import { oneShotFn, OneShot } from '../dist/rank/oneshot-wasm.js';
import { reduceInto } from '../dist/rank/dtype.js';

const STEP = 4096;
const DATA = 4096;
const AREA = DATA + 4 * STEP;
const OFF = { W: 0, D: 64, G: 128, HEAD: 192, ASLEEP: 448, DATA };

/**
 * R ranks' areas in one arena, seen from rank `me`; returns the call and views to set the peers' state.
 * @param {number} R
 * @param {number} me
 * @param {import('../dist/rank/types.js').CommDType} [dtype]
 * @param {import('../dist/rank/types.js').ReduceOp} [op]
 */
function world(R, me, dtype = 'float32', op = 'sum') {
  const arena = SimdArena.create();
  assert.ok(arena, 'Node 20 has wasm SIMD');
  const scratch = 0;
  const stage = STEP;
  const epochBase = 2 * STEP;
  const at = Array.from({ length: R }, (_, r) => 65536 + r * AREA);
  arena.reserve(65536 + R * AREA);
  const mem = arena.mem.buffer;
  new Uint8Array(mem).fill(0);
  const layout = { me, at, step: STEP, ...OFF, scratch, stage, epochs: at.map((_, r) => epochBase + 64 * r) };
  const fn = oneShotFn(layout, arena.mem, dtype, op);
  assert.ok(fn, `a one-exchange function for ${dtype}/${op}`);
  const i32 = new Int32Array(mem);
  const word = (r, off) => (at[r] + off) >> 2;
  return {
    fn, mem, at,
    get: (r, off) => i32[word(r, off)],
    put: (r, off, v) => { i32[word(r, off)] = v; },
    head: (r, p, seq, desc, nbytes) => i32.set([seq, desc, nbytes], word(r, OFF.HEAD + 64 * p)),
    input: (r, p) => at[r] + DATA + p * STEP,
    epoch: (r, v) => { new Float64Array(mem, epochBase + 64 * r, 1)[0] = v; },
    stage, scratch,
  };
}

test('the wasm one-exchange call stops where the JavaScript path carries on, and reduces in rank order when all are there', () => {
  const w = world(2, 0);
  const n = 255; // 1020 bytes: not a whole number of vectors
  const nbytes = n * 4;
  const g = 3;
  const p = g & 1;
  const mine = Float32Array.from({ length: n }, (_, i) => i);
  const theirs = Float32Array.from({ length: n }, (_, i) => 1000 - 2 * i);
  new Float32Array(w.mem, w.stage, n).set(mine);

  // A peer has not reduced generation g-2 yet: our input area of this parity is still its to read.
  w.put(1, OFF.D, g - 3);
  assert.equal(w.fn(g, 7, 99, nbytes, 50), OneShot.AreaBusy);
  assert.equal(w.get(0, OFF.W), 0, 'nothing published');
  assert.ok(new Uint8Array(w.mem, w.input(0, p), nbytes).every((b) => b === 0), 'nothing written into the area');

  // The area is free, the peer has not published its input: ours is published, the wait handed back.
  w.put(1, OFF.D, g - 2);
  assert.equal(w.fn(g, 7, 99, nbytes, 50), OneShot.Published);
  assert.equal(w.get(0, OFF.W), g);
  assert.deepEqual([w.get(0, OFF.HEAD + 64 * p), w.get(0, OFF.HEAD + 64 * p + 4), w.get(0, OFF.HEAD + 64 * p + 8)], [7, 99, nbytes]);
  assert.deepEqual(Array.from(new Float32Array(w.mem, w.input(0, p), n)), Array.from(mine));
  assert.equal(w.get(0, OFF.D), 0, 'not reduced');

  // The peer is there but says it may sleep (on our doorbell, or in the world's wait): it must be woken
  // by the JavaScript before anyone waits for it, so the call hands back even though its input is there.
  w.put(1, OFF.W, g);
  w.head(1, p, 7, 99, nbytes);
  new Float32Array(w.mem, w.input(1, p), n).set(theirs);
  w.put(1, OFF.ASLEEP, 1);
  assert.equal(w.fn(g, 7, 99, nbytes, 50), OneShot.Published);
  w.put(1, OFF.ASLEEP, 0);
  w.epoch(1, 12345);
  assert.equal(w.fn(g, 7, 99, nbytes, 50), OneShot.Published);
  w.epoch(1, 0);
  assert.equal(w.get(0, OFF.D), 0, 'not reduced');

  // Headers that disagree (op, dtype: the descriptor; the length; the collective's number): nothing reduced.
  for (const [seq, desc, len] of [[7, 98, nbytes], [7, 99, nbytes - 4], [8, 99, nbytes]]) {
    w.head(1, p, seq, desc, len);
    assert.equal(w.fn(g, 7, 99, nbytes, 50), OneShot.Mismatch, `peer header ${[seq, desc, len]}`);
    assert.equal(w.get(0, OFF.D), 0);
  }

  // All there: scratch = ours + theirs, counters D and G published.
  w.head(1, p, 7, 99, nbytes);
  assert.equal(w.fn(g, 7, 99, nbytes, 50), OneShot.Done);
  assert.deepEqual(Array.from(new Float32Array(w.mem, w.scratch, n)), Array.from(mine, (x, i) => x + theirs[i]));
  assert.equal(w.get(0, OFF.D), g);
  assert.equal(w.get(0, OFF.G), g);
});

test('the wasm one-exchange call: three ranks in rank order, integer lanes that wrap, counters that wrap past 2^31', () => {
  for (const me of [0, 1, 2]) {
    const w = world(3, me, 'int8', 'sum');
    const n = 37;
    // A generation past 2^31: counters are compared modulo 2^32, as the JavaScript does.
    const g = 2 ** 31 + 1;
    const p = g & 1;
    const vals = [0, 1, 2].map((r) => Int8Array.from({ length: n }, (_, i) => 100 + r * 10 + i));
    new Int8Array(w.mem, w.stage, n).set(vals[me]);
    for (let r = 0; r < 3; r++) {
      if (r === me) continue;
      w.put(r, OFF.D, g - 2);
      w.put(r, OFF.W, g);
      w.head(r, p, 5, -7, n);
      new Int8Array(w.mem, w.input(r, p), n).set(vals[r]);
    }
    assert.equal(w.fn(g, 5, -7, n, 50), OneShot.Done, `rank ${me}`);
    const want = Int8Array.from({ length: n }, (_, i) => vals[0][i] + vals[1][i] + vals[2][i]);
    assert.deepEqual(Array.from(new Int8Array(w.mem, w.scratch, n)), Array.from(want), `rank ${me}`);
    assert.equal(w.get(me, OFF.D), g | 0);
  }
});

test('no wasm one-exchange function where wasm has no vector op (float16 sums stay in JavaScript)', () => {
  const arena = SimdArena.create();
  assert.ok(arena);
  const layout = { me: 0, at: [65536, 65536 + AREA], step: STEP, ...OFF, scratch: 0, stage: STEP, epochs: [8192, 8256] };
  arena.reserve(65536 + 2 * AREA);
  assert.equal(oneShotFn(layout, arena.mem, 'float16', 'sum'), undefined);
  assert.equal(oneShotFn(layout, arena.mem, 'bfloat16', 'max'), undefined);
});

// Which way a short call ends depends on timing (a late rank's call ends in WebAssembly, an early one's in
// JavaScript), so every way must give the same bits: here -0 against +0 under min and max, in the
// vectors and in the tail that does not fill one (the JavaScript path's vector loop, then its tail).
test('min and max of -0 and +0 give the same bits in the wasm call, in the JavaScript path\'s SIMD reduce and in the plain reduce', () => {
  const show = (a) => Array.from(a, (x) => (Object.is(x, -0) ? '-0' : String(x)));
  for (const dtype of /** @type {const} */ (['float32', 'float64'])) {
    const C = dtype === 'float32' ? Float32Array : Float64Array;
    for (const op of /** @type {const} */ (['min', 'max'])) {
      for (const me of [0, 1]) {
        const w = world(2, me, dtype, op);
        const n = 2 * (16 / C.BYTES_PER_ELEMENT) + 1; // two whole vectors and a tail of one
        const g = 3;
        const p = g & 1;
        const vals = [0, 1].map((r) => {
          const a = new C(n);
          for (let i = 0; i < n; i++) a[i] = (i + r) % 2 ? -0 : 0;
          return a;
        });
        new C(w.mem, w.stage, n).set(vals[me]);
        const peer = 1 - me;
        w.put(peer, OFF.D, g - 2);
        w.put(peer, OFF.W, g);
        w.head(peer, p, 5, 3, n * C.BYTES_PER_ELEMENT);
        new C(w.mem, w.input(peer, p), n).set(vals[peer]);
        assert.equal(w.fn(g, 5, 3, n * C.BYTES_PER_ELEMENT, 50), OneShot.Done);
        const wasm = show(new C(w.mem, w.scratch, n));
        const plain = new C(n);
        reduceInto(dtype, op, plain, vals);
        const want = Array.from({ length: n }, () => (op === 'min' ? '-0' : '0'));
        assert.deepEqual(wasm, want, `${dtype} ${op}: the wasm call, rank ${me}`);
        assert.deepEqual(show(plain), want, `${dtype} ${op}: reduceInto`);
        const arena = SimdArena.create();
        assert.ok(arena);
        arena.reserve(65536);
        const m = arena.mem.buffer;
        new C(m, 1024, n).set(vals[0]);
        new C(m, 2048, n).set(vals[1]);
        arena.reduce3(dtype, op, 4096, [1024, 2048], n * C.BYTES_PER_ELEMENT, C.BYTES_PER_ELEMENT);
        assert.deepEqual(show(new C(m, 4096, n)), want, `${dtype} ${op}: the JavaScript path's reduce3`);
      }
    }
  }
});
