// castTensor between bfloat16 and float16 goes through a table of every bit pattern instead of a float32
// round trip: the same bytes as the general path for every pattern, and float16 overflow still fails
// naming the tensor and index (or saturates with clamp), exactly as before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { castTensor } from 'tprun';
import { f32BitsToF16Bits, f32BitsToBf16Bits, f16BitsToFloat, floatToF32Bits } from '../dist/core/half.js';

const all = () => new Uint16Array(65536).map((_, i) => i);
const tensor = (dtype, words) => ({ dtype, shape: [words.length], data: new Uint8Array(words.buffer, words.byteOffset, words.byteLength) });
const u16 = (t) => new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.length / 2);

test('bfloat16 -> float16: every pattern as float32 rounding gives it, overflow reported or clamped', () => {
  const src = all();
  // Reference, element by element: exact float32 bits, round to nearest even; -1 = overflow.
  const want = Array.from(src, (h) => f32BitsToF16Bits((h << 16) >>> 0));
  const finite = src.filter((_, i) => want[i] >= 0);
  const got = u16(castTensor(tensor('bfloat16', finite), 'float16'));
  assert.deepEqual(Array.from(got), want.filter((h) => h >= 0));
  // 0x4780 = 65536 as bf16: beyond float16's range.
  const over = Uint16Array.of(0x3f80, 0x4780, 0x3f80);
  assert.throws(() => castTensor(tensor('bfloat16', over), 'float16', { what: 'm: tensor w' }), /m: tensor w: value 65536 at index 1 is beyond float16's range/);
  assert.deepEqual(Array.from(u16(castTensor(tensor('bfloat16', over), 'float16', { clamp: true }))), [0x3c00, 0x7bff, 0x3c00]);
  // An odd byte offset (a view into a larger buffer) converts the same.
  const buf = new Uint8Array(2 * finite.length + 1);
  buf.set(new Uint8Array(finite.buffer), 1);
  assert.deepEqual(Array.from(u16(castTensor({ dtype: 'bfloat16', shape: [finite.length], data: buf.subarray(1) }, 'float16'))), Array.from(got));
});

test('float16 -> bfloat16: every pattern as the float32 path gives it', () => {
  const got = u16(castTensor(tensor('float16', all()), 'bfloat16'));
  for (let h = 0; h < 65536; h++) {
    const f = f16BitsToFloat(h);
    const want = Number.isNaN(f) ? f32BitsToBf16Bits(floatToF32Bits(NaN)) : f32BitsToBf16Bits(floatToF32Bits(f));
    assert.equal(got[h], want, `pattern ${h.toString(16)}`);
  }
});
