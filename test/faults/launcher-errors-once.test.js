// An error that every rank hits (bad input seen inside the ranks) is shown once, next to the launcher's
// one line naming the rank that ended the job; different messages, and the ranks' other output, all stay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLI, runTprun } from '../helpers/procs.js';

test('the same tprun error from every rank is printed once, plus the launcher line', async () => {
  for (const tag of [[], ['--tag-output']]) {
    const r = await runTprun(['-n', '3', '--gpus', 'none', ...tag, '--', process.execPath, CLI, 'convert', '--model', '/nonexistent-tprun-model', '--tp', '3', '--out', '/nonexistent-tprun-out']);
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 2, r.stderr);
    assert.equal(lines.filter((l) => /tprun convert: rank \d: --model \/nonexistent-tprun-model: no such directory$/.test(l)).length, 1, r.stderr);
    assert.equal(lines.filter((l) => /^tprun: rank \d \(pid \d+\) exited with code 2$/.test(l)).length, 1, r.stderr);
    assert.deepEqual(r.left, []);
  }
});

test('ranks\' own lines, and tprun lines that differ, are all kept', async () => {
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--', 'sh', '-c', 'echo "same line" >&2; echo "tprun: from rank $TPRUN_RANK of a file f$TPRUN_RANK" >&2']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.trim().split('\n').sort();
  assert.deepEqual(lines, ['same line', 'same line', 'tprun: from rank 0 of a file f0', 'tprun: from rank 1 of a file f1']);
});
