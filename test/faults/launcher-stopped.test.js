// A stopped rank (SIGSTOP, SIGTSTP) fails nobody by itself: its peers give up waiting for it. The
// launcher then names the stopped rank, not the peer that noticed, and still ends every process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTprun } from '../helpers/procs.js';

const WORLD = fileURLToPath(new URL('../../dist/rank/world.js', import.meta.url));

// The hang guard (the test's timeout, far below --grace 300) fails the test if only SIGKILL after the grace
// period could end the stopped rank: SIGTERM stays pending in a stopped process until it is continued.
test('a job failing around a stopped rank names the stopped rank and ends it', { timeout: 120_000 }, async () => {
  // Rank 1 stops itself (its child keeps running); rank 0 gives up on it once it is stopped.
  const dir = mkdtempSync(join(tmpdir(), 'tprun-stop-'));
  const r = await runTprun([
    '-n', '3', '--gpus', 'none', '--grace', '300', '--', 'sh', '-c',
    `case "$TPRUN_RANK" in
       0) until [ -s "$STOPDIR/pid" ] && grep -q '^[0-9]* ([^)]*) T' "/proc/$(cat "$STOPDIR/pid")/stat"; do sleep 0.05; done; exit 7;;
       1) sleep 300 & echo $$ > "$STOPDIR/pid.tmp"; mv "$STOPDIR/pid.tmp" "$STOPDIR/pid"; kill -s STOP $$;;
     esac; sleep 300`,
  ], { env: { STOPDIR: dir } }).finally(() => rmSync(dir, { recursive: true, force: true }));
  assert.equal(r.code, 7, r.stderr);
  assert.match(r.stderr, /^tprun: rank 1 \(pid \d+\) is stopped \(SIGSTOP\/SIGTSTP\) and holds up the job; rank 0 \(pid \d+\) exited with code 7\n$/);
  assert.deepEqual(r.left, []);
});

test('a world whose rank is stopped: the collective times out on a peer, the launcher names the stopped rank', async () => {
  const app = `
    import { initWorld } from ${JSON.stringify(WORLD)};
    const w = await initWorld({ timeoutMs: 3000 });
    await w.barrier();
    if (w.rank === 1) process.kill(process.pid, 'SIGSTOP');
    await w.barrier();
    await w.close();
  `;
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--', process.execPath, '--input-type=module', '-e', app]);
  assert.notEqual(r.code, 0);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('tprun: '));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^tprun: rank 1 \(pid \d+\) is stopped \(SIGSTOP\/SIGTSTP\) and holds up the job; rank 0 \(pid \d+\) exited with code \d+$/);
  assert.deepEqual(r.left, []);
});

test('a job that times out because a rank is stopped says which rank', async () => {
  const r = await runTprun([
    '-n', '2', '--gpus', 'none', '--timeout', '3', '--', 'sh', '-c', `if [ "$TPRUN_RANK" = 1 ]; then kill -s STOP $$; fi; sleep 300`,
  ]);
  assert.equal(r.code, 124, r.stderr);
  assert.match(r.stderr, /^tprun: job timed out after 3s, stopping 2 rank\(s\); rank 1 \(pid \d+\) is stopped \(SIGSTOP\/SIGTSTP\)\n$/);
  assert.deepEqual(r.left, []);
});
