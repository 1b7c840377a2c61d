// A stopped rank (SIGSTOP, SIGTSTP) fails nobody by itself: its peers give up waiting for it. The
// launcher then names the stopped rank, not the peer that noticed, and still ends every process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { runTprun } from '../helpers/procs.js';

const WORLD = fileURLToPath(new URL('../../dist/rank/world.js', import.meta.url));

test('a job failing around a stopped rank names the stopped rank and ends it', async () => {
  // Rank 1 stops itself (with a child that ignores SIGTERM); rank 0 gives up on it a moment later.
  const r = await runTprun([
    '-n', '3', '--gpus', 'none', '--grace', '60', '--', 'sh', '-c',
    `case "$TPRUN_RANK" in 0) sleep 1; exit 7;; 1) (trap '' TERM; exec sleep 300) & kill -s STOP $$;; esac; sleep 300`,
  ]);
  assert.equal(r.code, 7, r.stderr);
  assert.match(r.stderr, /^tprun: rank 1 \(pid \d+\) is stopped \(SIGSTOP\/SIGTSTP\) and holds up the job; rank 0 \(pid \d+\) exited with code 7\n$/);
  // --grace 60: a stopped rank that only SIGKILL could end would keep the job (and this test) waiting.
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
