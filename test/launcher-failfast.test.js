// Fail-fast, signals, timeouts and cleanup: a job ends with the right code and leaves no process behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runTprun, startTprun, newMark, leftovers, procsWithMark, waitFor } from './helpers/procs.js';

// Ranks that would run for a long time unless the launcher stops them.
const LONG = 'sleep 300';

test('a rank exiting non-zero ends the job with its code and one line naming it', async () => {
  const r = await runTprun(['-n', '3', '--gpus', 'none', '--', 'sh', '-c', `if [ "$TPRUN_RANK" = 1 ]; then exit 3; fi; ${LONG}`]);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /^tprun: rank 1 \(pid \d+\) exited with code 3$/m);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.deepEqual(r.left, []);
});

test('a rank killed by a signal ends the job with 128+signal', async () => {
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--', 'sh', '-c', `if [ "$TPRUN_RANK" = 0 ]; then kill -SEGV $$; fi; ${LONG}`]);
  assert.equal(r.code, 128 + 11);
  assert.match(r.stderr, /^tprun: rank 0 \(pid \d+\) killed by SIGSEGV$/m);
  assert.deepEqual(r.left, []);
});

test('a rank that crashes while the job stops for another rank\'s failure is named too', async () => {
  // Rank 1 fails first (as a peer does when it sees a crashed rank's connection drop); rank 0, deaf to the
  // launcher's SIGTERM, then dies of SIGABRT: both lines, the first failure's code.
  const r = await runTprun([
    '-n', '2', '--gpus', 'none', '--grace', '5', '--',
    'sh', '-c', `if [ "$TPRUN_RANK" = 1 ]; then exit 4; fi; trap '' TERM; sleep 0.5; kill -ABRT $$`,
  ]);
  assert.equal(r.code, 4);
  assert.match(r.stderr, /^tprun: rank 1 \(pid \d+\) exited with code 4$/m);
  assert.match(r.stderr, /^tprun: rank 0 \(pid \d+\) was killed by SIGABRT as well$/m);
  assert.deepEqual(r.left, []);
});

test('a rank that ignores SIGTERM is killed after --grace', async () => {
  const r = await runTprun([
    '-n', '2', '--gpus', 'none', '--grace', '0.5', '--',
    'sh', '-c', `if [ "$TPRUN_RANK" = 1 ]; then sleep 0.2; exit 5; fi; trap '' TERM; ${LONG} & wait; ${LONG}`,
  ]);
  assert.equal(r.code, 5);
  assert.deepEqual(r.left, []);
});

test('all ranks succeeding gives 0, and what a rank forked goes down with it', async () => {
  // Rank 0 leaves a child that holds its stdout, rank 1 one that ignores SIGTERM and holds no pipe.
  const r = await runTprun([
    '-n', '2', '--gpus', 'none', '--grace', '0.5', '--', 'sh', '-c',
    `if [ "$TPRUN_RANK" = 0 ]; then ${LONG} & else (trap '' TERM; exec ${LONG}) >/dev/null 2>&1 & fi; echo started`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'started\nstarted\n');
  assert.deepEqual(r.left, []);
});

test('a failing rank takes down the children of the other ranks too', async () => {
  const r = await runTprun([
    '-n', '2', '--gpus', 'none', '--', 'sh', '-c',
    `${LONG} & ${LONG} & if [ "$TPRUN_RANK" = 1 ]; then sleep 0.3; exit 9; fi; wait`,
  ]);
  assert.equal(r.code, 9);
  assert.deepEqual(r.left, []);
});

test('--timeout ends the job with 124', async () => {
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--timeout', '0.5', '--', 'sh', '-c', LONG]);
  assert.equal(r.code, 124);
  assert.match(r.stderr, /^tprun: job timed out after 0.5s/m);
  assert.deepEqual(r.left, []);
});

for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  test(`${sig} to the launcher reaches every rank and ends the job with 128+signal`, async () => {
    const mark = newMark();
    // Each rank reports the signal it got, so we see it was forwarded (not just a SIGKILL).
    const job = startTprun(['-n', '2', '--gpus', 'none', '--', 'sh', '-c', `trap 'echo got-${sig}; exit 1' ${sig.slice(3)}; echo ready; ${LONG} & wait`], { mark });
    await waitFor(() => job.stdout.split('ready').length === 3, 20000, 'both ranks ready');
    job.child.kill(sig);
    const r = await job.done;
    assert.equal(r.code, sig === 'SIGINT' ? 130 : 143);
    assert.equal(r.stdout.split(`got-${sig}`).length, 3, r.stdout);
    assert.match(r.stderr, new RegExp(`^tprun: received ${sig}, stopping 2 rank\\(s\\)$`, 'm'));
    assert.deepEqual(await leftovers(mark), []);
  });
}

test('ranks die when the launcher itself is SIGKILLed', async () => {
  const mark = newMark();
  const job = startTprun(['-n', '3', '--gpus', 'none', '--grace', '1', '--', 'sh', '-c', `echo ready; ${LONG}`], { mark });
  await waitFor(() => job.stdout.split('ready').length === 4, 20000, 'ranks ready');
  assert.ok(procsWithMark(mark).length >= 6, 'ranks and their sleeps are running');
  job.child.kill('SIGKILL');
  await job.done;
  assert.deepEqual(await leftovers(mark, 10000), []);
});

test('bad options give one line and exit code 2', async () => {
  for (const args of [['-n', '0', '--', 'true'], ['-n', '2'], ['-n', '2', '--'], ['--no-such-option', '--', 'true'], ['--gpus', 'x', '--', 'true'], ['--timeout', '0', '--', 'true']]) {
    const r = await runTprun(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^tprun: /);
    assert.equal(r.stdout, '');
  }
});

test('a command that does not exist: one line, exit 127', async () => {
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--', 'tprun-no-such-program']);
  assert.equal(r.code, 127);
  assert.match(r.stderr, /^tprun: rank \d: cannot run 'tprun-no-such-program' \(ENOENT\)\n$/);
  assert.deepEqual(r.left, []);
});
