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

// A refused message fails the receive it belongs to, whenever it arrived: a rank still busy in another
// wait (initWorld's start-up exchange, a collective with a third rank) is not failed by it, the other
// messages from that sender still land, and nothing of the refused one is kept.
test('a message past the limit or of the wrong length is dropped and fails only its own receive', () => {
  const inbox = new Inbox(2, 1000, 0);
  const p2p = 0x40000000 + 4;
  const big = { a: p2p, b: 1, total: 4000, off: 0, len: 500 };
  assert.equal(inbox.target(1, big), undefined, 'nothing is allocated for it');
  inbox.landed(1, big);
  assert.equal(inbox.target(1, { ...big, off: 500 }), undefined);
  // Another message from the same sender still arrives whole.
  const ok = { a: p2p + 1, b: 1, total: 8, off: 0, len: 8 };
  const okAt = inbox.target(1, ok);
  assert.ok(okAt);
  okAt.set(new Uint8Array(8).fill(7));
  inbox.landed(1, ok);
  assert.deepEqual([...inbox.take(1, p2p + 1, 1)], new Array(8).fill(7));
  inbox.post(1, p2p, 1);
  assert.throws(() => inbox.done(1, p2p, 1), /^CommError: rank 1 sent a 4000-byte message; the limit is 1000 \(TPRUN_MAX_MESSAGE_BYTES\)$/);
  // Posted first with 16 bytes, then 32 arrive; and 32 arrived before a 16-byte post: the same words.
  const want = /^CommError: rank 1 sent 32 bytes where 16 were expected \(mismatched collective or recv length\)$/;
  inbox.post(1, p2p, 2, new Uint8Array(16));
  assert.equal(inbox.target(1, { a: p2p, b: 2, total: 32, off: 0, len: 32 }), undefined);
  assert.throws(() => inbox.done(1, p2p, 2), want);
  const early = { a: p2p, b: 3, total: 32, off: 0, len: 32 };
  const earlyAt = inbox.target(1, early);
  assert.ok(earlyAt);
  earlyAt.fill(1);
  inbox.landed(1, early);
  inbox.post(1, p2p, 3, new Uint8Array(16));
  assert.throws(() => inbox.done(1, p2p, 3), want);
});

test('pieces still on their way after a receive gave up are dropped, and the entry goes with the last of them', () => {
  const inbox = new Inbox(2, 1 << 30, 0);
  const p2p = 0x40000000 + 1;
  inbox.post(1, p2p, 1, new Uint8Array(16));
  const piece = (off) => ({ a: p2p, b: 1, total: 4096, off, len: 1024 });
  assert.equal(inbox.target(1, piece(0)), undefined);
  inbox.landed(1, piece(0));
  assert.throws(() => inbox.done(1, p2p, 1), /sent 4096 bytes where 16 were expected/);
  inbox.forget(1, p2p, 1);
  for (const off of [1024, 2048]) {
    assert.equal(inbox.target(1, piece(off)), undefined, 'no buffer is made for the rest');
    inbox.landed(1, piece(off));
  }
  assert.equal(inbox['boxes'][1].size, 1);
  inbox.target(1, piece(3072));
  inbox.landed(1, piece(3072));
  assert.equal(inbox['boxes'][1].size, 0, 'nothing is kept once the last piece passed');
  // A receive that timed out before anything came leaves nothing behind (a receive retried in a loop
  // against a peer that never sends would otherwise pile entries up).
  for (let b = 2; b < 6; b++) {
    inbox.post(1, p2p, b, new Uint8Array(8));
    inbox.forget(1, p2p, b);
  }
  assert.equal(inbox['boxes'][1].size, 0);
});

test('a point-to-point message whose sequence number is the notices\' phase still arrives', () => {
  const inbox = new Inbox(2, 1 << 20, 0);
  const h = { a: 0x40000000 + 3, b: 2097151, total: 4, off: 0, len: 4 };
  inbox.post(1, h.a, h.b);
  inbox.target(1, h);
  inbox.landed(1, h);
  assert.equal(inbox.done(1, h.a, h.b), true);
});
