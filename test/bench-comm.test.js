// `tprun bench comm --fresh N`: a fresh process's first N calls of the first size, before any warm-up, as
// medians per window of calls (issue #14: what a user's first calls get), for tprun and, where Open MPI is
// installed, for it in the same run. Figures are not asserted (speed is measured, never tested): the shape is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

test('bench comm --fresh reports the first call and the median call of each window of the next ones', async () => {
  const r = await execa('node', [CLI, 'bench', 'comm', '--no-mpi', '--rounds', '1', '--sizes', '1024,4096', '--fresh', '150', '--json'], { reject: false, timeout: 120000 });
  assert.equal(r.exitCode, 0, r.stderr);
  const rows = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const [first, second] = rows.filter((x) => x.impl === 'tprun');
  assert.equal(first.bytes, 1024);
  assert.ok(first.firstUs > 0);
  assert.deepEqual(first.fresh.map(([a, b]) => [a, b]), [[1, 10], [10, 100], [100, 150]]);
  for (const [, , us] of first.fresh) assert.ok(us > 0);
  assert.equal(second.fresh, undefined, 'only the first size is timed from a fresh start');
});

test('bench comm --fresh refuses a count that is not a whole number, in one line', async () => {
  const r = await execa('node', [CLI, 'bench', 'comm', '--no-mpi', '--fresh', '-3'], { reject: false, timeout: 60000 });
  assert.equal(r.exitCode, 2);
  assert.match(r.stderr.trim(), /^tprun bench comm: --fresh: -3 is not a whole number of calls$/);
});
