// A rank that cannot be started (here: the launcher is out of file descriptors) stops the job cleanly:
// one line naming the rank and the cause, and none of the ranks already started is left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, newMark, markEnv, leftovers, procsWithMark } from '../helpers/procs.js';

/** Runs tprun under `ulimit -n 64`; resolves to { code, stdout, stderr }. */
function underUlimit(args, env) {
  const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

function killAll(mark) {
  for (const p of procsWithMark(mark)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

test('running out of file descriptors part-way: one line naming the rank, no process left', async () => {
  const mark = newMark();
  try {
    // 64 descriptors: node takes some ~25, each local rank 2 pipes, so some of the 40 ranks start and then one fails.
    const { code, stdout, stderr } = await underUlimit(['-n', '40', '--gpus', 'none', '--grace', '0.5', '--', 'sh', '-c', 'sleep 40'], markEnv(mark));
    assert.equal(code, 126, stderr);
    assert.match(stderr, /^tprun: rank (\d+): cannot start 'sh' \(EMFILE: out of file descriptors, each local rank needs 2; see ulimit -n\); stopping the \d+ rank\(s\) already started\n$/);
    const failed = Number(/rank (\d+)/.exec(stderr)?.[1]);
    assert.ok(failed > 0 && failed < 40, `some ranks started before rank ${failed} failed`);
    assert.equal(stdout, '');
    assert.deepEqual(await leftovers(mark, 10000), []);
  } finally {
    killAll(mark);
  }
});

test('the same for ssh ranks (an ssh stand-in that just waits)', async () => {
  const mark = newMark();
  const dir = mkdtempSync(join(tmpdir(), 'tprun-ssh-'));
  try {
    writeFileSync(join(dir, 'ssh'), '#!/bin/sh\nexec sleep 40\n');
    chmodSync(join(dir, 'ssh'), 0o755);
    const { code, stdout, stderr } = await underUlimit(['--hosts', 'some-host:40', '--grace', '0.5', '--', 'true'], markEnv(mark, { TPRUN_SSH: join(dir, 'ssh') }));
    assert.equal(code, 126, stderr);
    assert.match(stderr, /^tprun: rank (\d+): cannot start ssh to some-host \(EMFILE: out of file descriptors, each ssh rank needs 3; see ulimit -n\); stopping the \d+ rank\(s\) already started\n$/);
    assert.equal(stdout, '');
    assert.deepEqual(await leftovers(mark, 15000), []);
  } finally {
    killAll(mark);
    rmSync(dir, { recursive: true, force: true });
  }
});
