// The inbox's check of collective descriptors across a key wrap: a group's sequence restarts at 1 after
// 2^22 - 1 collectives, and an entry kept from before the wrap must not make a later collective's early
// message look mismatched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Inbox } from '../dist/rank/inbox.js';
import { collectiveKey, descriptor, SEQ_BITS } from '../dist/rank/collective-check.js';

test('after a sequence wrap, an early message for a reused key is checked against the new collective, not the old one', () => {
  const inbox = new Inbox(2, 1 << 20, 0);
  const last = collectiveKey(1, 2 ** SEQ_BITS - 1);
  inbox.begin(last, descriptor('allReduce', 'float32', 'sum'));
  // The sequence wraps: group 1 runs 4096 more collectives, keys 1..4096, all broadcasts.
  for (let s = 1; s <= 4096; s++) inbox.begin(collectiveKey(1, s), descriptor('broadcast', 'float32', undefined, 0));
  // ... and on, until it reaches the old key again; the peer's piece for it arrives before our begin().
  const h = { a: last, b: 0, total: 4, off: 0, len: 4, desc: descriptor('barrier') };
  assert.doesNotThrow(() => inbox.target(1, h));
  // A real mismatch is still caught.
  assert.throws(() => inbox.begin(last, descriptor('allGather', 'int32')), /mismatched collective #4194303 in group 1: rank 1 called barrier\(\) where rank 0 called allGather\(int32\)/);
});
