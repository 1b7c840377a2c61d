// Issue #11 item 11: collectives of the same byte size that differ in kind, dtype, op or root used to
// pass with wrong results; each message now carries its collective's descriptor and a mismatch fails
// naming both ranks and what differed. (Different lengths were already caught by the byte counts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobEnv, startRanks } from './rank-spawn.js';

const cases = {
  kind: /mismatched collective #1: rank 0 called allReduce\(sum, float32\) where rank 1 called broadcast\(float32, root 0\) \(different collectives\)/,
  dtype: /mismatched collective #1: rank \d called allReduce\(sum, \w+\) where rank \d called allReduce\(sum, \w+\) \(dtype (float32 vs int32|int32 vs float32)\)/,
  op: /mismatched collective #1: rank \d called allReduce\((sum|max), float32\) where rank \d called allReduce\((max|sum), float32\) \(op (sum vs max|max vs sum)\)/,
  root: /mismatched collective #1: rank \d called broadcast\(float32, root \d\) where rank \d called broadcast\(float32, root \d\) \(root (0 vs 1|1 vs 0)\)/,
  length: /rank \d sent (16|32) bytes where (32|16) were expected \(mismatched collective or recv length\)/,
};

for (const transport of ['shm', 'zmq']) {
  for (const [what, re] of Object.entries(cases)) {
    test(`a ${what} mismatch between two ranks fails, naming both (${transport})`, async () => {
      const env = await jobEnv(2, { TPRUN_TRANSPORT: transport, APP_TIMEOUT_MS: '20000' });
      const rs = startRanks(2, env, ['mismatch', what]);
      await Promise.all(rs.map((r) => r.exited));
      const err = rs.map((r) => r.stderr).join('\n');
      assert.match(err, re);
      // Two roots of one broadcast each only send: a root can finish (and exit) before the other's message
      // reaches it, as an MPI root would. The job still fails (the launcher ends it on the first non-zero
      // rank), named by the rank that received the other's message. Every other mismatch has each rank
      // receive, so both fail.
      if (what === 'root') assert.ok(rs.some((r) => r.code !== 0), `no rank failed:\n${rs.map((r) => r.stdout + r.stderr).join('\n')}`);
      else for (const r of rs) assert.notEqual(r.code, 0, `rank ${r.rank} must not succeed:\n${r.stdout}${r.stderr}`);
      assert.doesNotMatch(err, /timed out/);
    });
  }
}

test('matching collectives of every kind still pass (descriptors agree)', async () => {
  const env = await jobEnv(3);
  const rs = startRanks(3, env, ['hello']);
  await Promise.all(rs.map((r) => r.exited));
  for (const r of rs) assert.equal(r.code, 0, r.stderr);
});
