// Run inside a mount namespace with a small tmpfs on /dev/shm (tmpfs-jobs test): starts JOBS 2-rank jobs of
// tmpfs-area-app.js one after another, each once the one before has made its first call (so each sizes its
// areas from the free space the others left), lets them all make a long call, and prints one JSON line:
// [{ job, code, step, out }].
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const APP = fileURLToPath(new URL('./tmpfs-area-app.js', import.meta.url));
const jobs = Number(process.argv[2] ?? 5);
const dir = mkdtempSync(join(tmpdir(), 'tprun-tmpfs-jobs-'));
const runs = [];
try {
  for (let j = 1; j <= jobs; j++) {
    const child = spawn(process.execPath, [CLI, '-n', '2', '--', process.execPath, APP], {
      env: { ...process.env, TMPFS_JOBS_DIR: dir, TMPFS_JOB: String(j), TPRUN_QUIET: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const done = new Promise((res) => child.on('exit', (code, signal) => res({ job: j, code: code ?? signal, out })));
    runs.push(done.then((r) => ({ ...r, out })));
    let ended = false;
    done.then(() => { ended = true; });
    while (!existsSync(join(dir, `ready-${j}`)) && !ended) await new Promise((r) => setTimeout(r, 50));
  }
  writeFileSync(join(dir, 'go'), '');
  const res = await Promise.all(runs);
  for (const r of res) r.step = existsSync(join(dir, `ready-${r.job}`)) ? Number(readFileSync(join(dir, `ready-${r.job}`), 'utf8')) : undefined;
  console.log(JSON.stringify(res));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
