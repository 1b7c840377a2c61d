// Every collective at world sizes 1..5, real rank processes started by `tprun -n N`; each rank checks
// its results against a sequential reference computed from all ranks' inputs (test/helpers/world-app.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));

for (const n of [1, 2, 3, 4, 5]) {
  test(`all collectives agree with the sequential reference on ${n} rank(s)`, async () => {
    const { stdout } = await run(process.execPath, [CLI, '-n', String(n), '--gpus', 'none', '--timeout', '50', '--', process.execPath, APP, 'all'], { timeout: 55000 });
    const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.rank).sort(), [...Array(n).keys()]);
    for (const l of lines) assert.deepEqual([l.ok, l.size, l.source], [true, n, 'tprun']);
  });
}

test('the network data plane (TPRUN_TRANSPORT=zmq) gives the same results', async () => {
  const { stdout } = await run(process.execPath, [CLI, '-n', '3', '--gpus', 'none', '--timeout', '50', '--', process.execPath, APP, 'all'],
    { timeout: 55000, env: { ...process.env, TPRUN_TRANSPORT: 'zmq' } });
  assert.equal(stdout.split('\n').filter((l) => l.includes('"ok":true')).length, 3);
});
