// runDistributed: a command that starts its own ranks, or joins the world it already runs in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { newMark, markEnv, leftovers, runTprun } from './helpers/procs.js';

const SELF_LAUNCH = fileURLToPath(new URL('../dist/launcher/self-launch.js', import.meta.url));

// argv: N [failRank]. Rank r contributes r+1 to an allReduce; `failRank` throws inside the body.
const APP = `
import { runDistributed } from ${JSON.stringify(SELF_LAUNCH)};
const n = Number(process.argv[2]);
const failRank = process.argv[3] === undefined ? -1 : Number(process.argv[3]);
try {
  await runDistributed(n, async (world) => {
    if (world.rank === failRank) throw new Error('boom on rank ' + world.rank);
    const buf = new Float32Array([world.rank + 1]);
    await world.allReduce(buf);
    console.log('rank ' + world.rank + '/' + world.size + ' sum ' + buf[0] + ' pid ' + process.pid + ' launcher ' + (process.env.TPRUN_RANK !== undefined));
  }, { gpus: 'none' });
} catch (e) {
  console.error('error: ' + e.message);
  process.exitCode = e.exitCode ?? 1;
}
`;

function run(dir, args, mark) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(dir, 'app.mjs'), ...args], { env: markEnv(mark), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr, pid: child.pid }));
  });
}

test('runDistributed: starts n ranks outside a world, runs in-process for n=1, joins a world, fails cleanly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-self-launch-'));
  try {
    writeFileSync(join(dir, 'app.mjs'), APP);

    const mark = newMark();
    const three = await run(dir, ['3'], mark);
    assert.equal(three.code, 0, three.stderr);
    const lines = three.stdout.trim().split('\n').sort();
    assert.deepEqual(lines.map((l) => l.replace(/ pid \d+/, '')), ['rank 0/3 sum 6 launcher true', 'rank 1/3 sum 6 launcher true', 'rank 2/3 sum 6 launcher true']);
    assert.ok(!lines.some((l) => l.includes(`pid ${three.pid} `)), 'the ranks are new processes');
    assert.deepEqual(await leftovers(mark), []);

    const one = await run(dir, ['1'], mark);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, `rank 0/1 sum 1 pid ${one.pid} launcher false\n`, 'n=1 runs in the calling process');

    // A rank whose body throws: the job ends, the caller gets an error carrying the rank's exit code.
    const failing = await run(dir, ['2', '1'], mark);
    assert.equal(failing.code, 1);
    assert.match(failing.stderr, /boom on rank 1/);
    assert.match(failing.stderr, /^tprun: rank 1 \(pid \d+\) exited with code 1$/m);
    assert.match(failing.stderr, /^error: a rank failed \(exit code 1\)$/m);
    assert.deepEqual(await leftovers(mark), []);

    // Already inside a world of the right size: join it, start nothing.
    const joined = await runTprun(['-n', '2', '--gpus', 'none', '--', process.execPath, join(dir, 'app.mjs'), '2'], { mark });
    assert.equal(joined.code, 0, joined.stderr);
    assert.deepEqual(joined.stdout.trim().split('\n').map((l) => l.replace(/ pid \d+/, '')).sort(), ['rank 0/2 sum 3 launcher true', 'rank 1/2 sum 3 launcher true']);

    // Inside a world of the wrong size: a clear error naming both numbers.
    const wrong = await runTprun(['-n', '2', '--gpus', 'none', '--', process.execPath, join(dir, 'app.mjs'), '3'], { mark });
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /needs 3 ranks but runs in a world of 2/);
    assert.deepEqual(wrong.left, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
