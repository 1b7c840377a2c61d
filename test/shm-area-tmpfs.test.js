// Jobs sharing one machine's /dev/shm: each sizes its allReduce areas from the space free when it starts
// (./src/rank/shm-link.ts), so it must claim that space then. Allocating only what short calls use at
// set-up let the next job see the rest as free and take a full-size area too; both died with ENOSPC at
// their first long call. Several jobs on a small tmpfs, each started after the one before has set up,
// must all finish their long call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const DRIVER = fileURLToPath(new URL('./helpers/tmpfs-jobs.js', import.meta.url));
const unshareOk = process.platform === 'linux'
  && spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev/shm'], { stdio: 'ignore' }).status === 0;
let koffi = true;
try { await import('koffi'); } catch { koffi = false; }

const JOBS = 5;
test(`${JOBS} 2-rank jobs started one after another on a 16 MiB /dev/shm all finish a long allReduce`, {
  timeout: 300_000,
  skip: (!unshareOk && 'needs unshare -m and mounting a tmpfs (root on Linux)') || (!koffi && 'koffi (optional) is not installed'),
}, () => {
  // A private mount namespace: the small tmpfs hides this machine's /dev/shm from these jobs only.
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c',
    'mount -t tmpfs -o size=16m tmpfs /dev/shm && exec "$0" "$@"', process.execPath, DRIVER, String(JOBS)],
  { encoding: 'utf8', timeout: 280_000 });
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]');
  assert.equal(res.length, JOBS);
  for (const j of res) {
    assert.equal(j.code, 0, `job ${j.job} (step ${j.step}): ${j.out}`);
    assert.equal((j.out.match(/long ok/g) ?? []).length, 2, `job ${j.job}: ${j.out}`);
  }
  // Each job sized its areas from what the ones before left (not the whole tmpfs each time).
  assert.ok(res[JOBS - 1].step < res[0].step, `steps ${res.map((j) => j.step)}`);
});
