// Half-precision conversions and reductions used by the collectives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f32ToBf16, f32ToF16, toF32, reduceInto, dtypeOf } from '../dist/rank/dtype.js';

test('float16: exact values, round-to-nearest-even, overflow, subnormals, NaN', () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2), 0xc000);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(70000), 0x7c00);
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, 'tie to even (down)');
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, 'tie to even (up)');
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f32ToF16(2 ** -26), 0x0000);
  assert.ok(Number.isNaN(toF32(new Uint16Array([f32ToF16(NaN)]), 'float16')[0]));
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(f32ToF16(toF32(new Uint16Array([h]), 'float16')[0]), h, `round trip ${h}`);
});

test('bfloat16: round-to-nearest-even and NaN stays NaN', () => {
  assert.equal(f32ToBf16(1), 0x3f80);
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80, 'tie to even (down)');
  assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82, 'tie to even (up)');
  assert.ok(Number.isNaN(toF32(new Uint16Array([f32ToBf16(NaN)]), 'bfloat16')[0]));
});

test('reductions: order, ops, NaN propagation, half precision summed in float32', () => {
  const out = new Float32Array(3);
  reduceInto('float32', 'sum', out, [new Float32Array([1, 2, 3]), new Float32Array([10, 20, 30]), new Float32Array([100, 200, 300])]);
  assert.deepEqual(Array.from(out), [111, 222, 333]);
  const m = new Float64Array([1, NaN, 5]);
  reduceInto('float64', 'max', m, [m, new Float64Array([2, 0, 4])]);
  assert.deepEqual(Array.from(m), [2, NaN, 5]);
  const i8 = new Int8Array([100, -100]);
  reduceInto('int8', 'sum', i8, [i8, new Int8Array([100, -100])]);
  assert.deepEqual(Array.from(i8), [-56, 56], 'wraps like MPI');
  // 2048 + 1 + 1 in float16: pairwise rounding would give 2048 twice; float32 accumulation gives 2050.
  const h = (x) => f32ToF16(x);
  const o16 = new Uint16Array(1);
  reduceInto('float16', 'sum', o16, [new Uint16Array([h(2048)]), new Uint16Array([h(1)]), new Uint16Array([h(1)])]);
  assert.equal(toF32(o16, 'float16')[0], 2050);
});

test('dtype checks', () => {
  assert.throws(() => dtypeOf(new Uint16Array(1)), /needs \{ dtype/);
  assert.throws(() => dtypeOf(new Float32Array(1), 'int32'), /does not match/);
  assert.equal(dtypeOf(new Uint16Array(1), 'bfloat16'), 'bfloat16');
});

test('the WebAssembly SIMD reductions match the JavaScript ones for every type and op (tails included)', async () => {
  const { SimdArena } = await import('../dist/rank/simd.js');
  const arena = SimdArena.create();
  assert.ok(arena, 'Node 20 has wasm SIMD');
  for (const [dt, C] of /** @type {const} */ ([['float32', Float32Array], ['float64', Float64Array], ['int32', Int32Array], ['int8', Int8Array], ['uint8', Uint8Array]])) {
    for (const op of /** @type {const} */ (['sum', 'max', 'min'])) {
      const n = 1003;
      const srcs = [0, 1, 2].map((k) => C.from(Array.from({ length: n }, (_, i) => (i === 5 && k === 1 && C === Float32Array ? NaN : ((i * 7 + k * 13) % 23) - 11))));
      const want = new C(n);
      reduceInto(dt, op, want, srcs);
      const slots = arena.slots(3, n * C.BYTES_PER_ELEMENT);
      srcs.forEach((s, k) => slots[k].set(new Uint8Array(s.buffer)));
      arena.reduce(dt, op, slots, C.BYTES_PER_ELEMENT);
      assert.deepEqual(Array.from(new C(/** @type {ArrayBuffer} */ (slots[0].buffer), slots[0].byteOffset, n)), Array.from(want), `${dt} ${op}`);
    }
  }
});

test('reduce3 (into a third place, four vectors per turn) matches JavaScript on either side of every 64-byte boundary', async () => {
  const { SimdArena } = await import('../dist/rank/simd.js');
  const arena = SimdArena.create();
  assert.ok(arena);
  const types = /** @type {const} */ ([['float32', Float32Array], ['float64', Float64Array], ['int32', Int32Array], ['int8', Int8Array], ['uint8', Uint8Array]]);
  for (const [dt, C] of types) {
    const es = C.BYTES_PER_ELEMENT;
    for (const nbytes of [16, 48, 64, 80, 128, 144, 192 + 8, 1024, 1040, 4096 + 3 * es]) {
      const n = nbytes / es;
      for (const op of /** @type {const} */ (['sum', 'max', 'min'])) {
        const srcs = [0, 1, 2].map((k) => C.from(Array.from({ length: n }, (_, i) => ((i * 5 + k * 11) % 19) - 9)));
        const want = new C(n);
        reduceInto(dt, op, want, srcs);
        arena.reserve(65536 * 2);
        const mem = arena.mem.buffer;
        // Sources at 0, 8192, 16384; the result at 32768, away from all of them.
        srcs.forEach((s, k) => new Uint8Array(mem, 8192 * k, nbytes).set(new Uint8Array(s.buffer)));
        new Uint8Array(mem, 32768, nbytes + 64).fill(0xee);
        arena.reduce3(dt, op, 32768, [0, 8192, 16384], nbytes, es);
        assert.deepEqual(Array.from(new C(mem, 32768, n)), Array.from(want), `${dt} ${op} ${nbytes} bytes`);
        assert.ok(new Uint8Array(mem, 32768 + nbytes, 64).every((b) => b === 0xee), `${dt} ${op} ${nbytes} bytes: nothing written past the end`);
      }
    }
  }
});
