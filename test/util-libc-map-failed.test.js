// mmap(2)'s failure value is judged one way wherever tprun maps (src/util/libc.ts mapFailed): the
// allReduce areas judged -1, all ones and NULL as failed, the checkpoint's column maps all ones only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mapFailed } from '../dist/util/libc.js';

test('mapFailed: MAP_FAILED however koffi reads it, and no pointer, are failures; an address is not', () => {
  const koffi = /** @type {any} */ ({ address: (/** @type {any} */ p) => p.a });
  assert.equal(mapFailed(koffi, null), true);
  assert.equal(mapFailed(koffi, { a: -1n }), true);
  assert.equal(mapFailed(koffi, { a: 0xffffffffffffffffn }), true);
  assert.equal(mapFailed(koffi, { a: 0n }), true);
  assert.equal(mapFailed(koffi, { a: 0x7f0000001000n }), false);
});
