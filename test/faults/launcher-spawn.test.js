// A rank that cannot be started (here: the launcher is out of file descriptors) stops the job cleanly:
// one line naming the rank and the cause, and none of the ranks already started is left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLI, newMark, markEnv, leftovers, procsWithMark } from '../helpers/procs.js';

test('running out of file descriptors part-way: one line naming the rank, no process left', async () => {
  const mark = newMark();
  try {
    // 64 descriptors: node takes some ~25, each local rank 2 pipes, so some of the 40 ranks start and then one fails.
    const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, CLI, '-n', '40', '--gpus', 'none', '--grace', '0.5', '--', 'sh', '-c', 'sleep 40'], {
      env: markEnv(mark),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((resolve) => child.on('close', (c) => resolve(c)));
    assert.equal(code, 126, stderr);
    assert.match(stderr, /^tprun: rank (\d+): cannot start 'sh' \(EMFILE: out of file descriptors, each local rank needs 2; see ulimit -n\); stopping the \d+ rank\(s\) already started\n$/);
    const failed = Number(/rank (\d+)/.exec(stderr)[1]);
    assert.ok(failed > 0 && failed < 40, `some ranks started before rank ${failed} failed`);
    assert.equal(stdout, '');
    assert.deepEqual(await leftovers(mark, 10000), []);
  } finally {
    for (const p of procsWithMark(mark)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
});
