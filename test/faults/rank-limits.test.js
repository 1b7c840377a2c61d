// Issue #11 item 6: a message over the receiver's TPRUN_MAX_MESSAGE_BYTES is refused naming the sender
// and the limit on both data planes; on ZeroMQ it used to drop the connection instead, so the receiver
// saw "data before authentication" and the error blamed a rank that had done nothing wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobEnv, startRank } from './rank-spawn.js';

for (const transport of ['zmq', 'shm']) {
  for (const bytes of [4000, 1 << 20, 9 << 20]) {
    test(`a ${bytes}-byte message to a rank that takes 1000 is refused naming rank 0 and the limit (${transport})`, async () => {
      const env = await jobEnv(2, { TPRUN_TRANSPORT: transport, APP_TIMEOUT_MS: '20000', APP_BYTES: String(bytes) });
      const r0 = startRank(0, env, ['oversize']);
      const r1 = startRank(1, { ...env, TPRUN_MAX_MESSAGE_BYTES: '1000' }, ['oversize']);
      await Promise.all([r0.exited, r1.exited]);
      assert.equal(r1.code, 1, r1.stderr);
      assert.match(r1.stderr, new RegExp(`recv from rank 0 \\(tag 4\\) failed on rank 1: rank 0 sent a ${bytes}-byte message; the limit is 1000 \\(TPRUN_MAX_MESSAGE_BYTES\\)`));
      for (const r of [r0, r1]) {
        assert.doesNotMatch(r.stderr, /data before authentication|timed out/);
        assert.doesNotMatch(r.stderr, /rank 1 sent/, 'the receiver is not blamed');
      }
    });
  }
}
