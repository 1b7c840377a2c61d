// A SIGKILLed launcher (nothing of it runs any more) still takes its ranks down, even ranks that ignore
// SIGTERM, whatever /bin/sh is (dash on Debian, bash elsewhere), and leaves no port lock behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTprun, newMark, markEnv, leftovers, procsWithMark, waitFor } from '../helpers/procs.js';
import { must } from '../helpers/must.js';

const WATCHDOG = fileURLToPath(new URL('../../dist/launcher/watchdog.js', import.meta.url));
// A rank that only SIGKILL ends, with a child of its own that does the same.
const STUBBORN = `trap '' TERM; (trap '' TERM; exec sleep 600) & echo ready; sleep 600; wait`;

/** A failing test must not leave its stubborn processes running for ten minutes. */
function killAll(mark) {
  for (const p of procsWithMark(mark)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

test('ranks that ignore SIGTERM die when the launcher is SIGKILLed, and the port lock goes too', async () => {
  const mark = newMark();
  const tmp = mkdtempSync(join(tmpdir(), 'tprun-wd-'));
  try {
    const job = startTprun(['-n', '2', '--gpus', 'none', '--grace', '0.5', '--', 'sh', '-c', STUBBORN], { mark, env: { TMPDIR: tmp } });
    await waitFor(() => job.stdout.split('ready').length === 3, 20000, 'both ranks ready');
    const lockDir = readdirSync(tmp).find((d) => d.startsWith('tprun-ports-'));
    assert.ok(lockDir, 'the launcher holds a port lock');
    assert.equal(readdirSync(join(tmp, lockDir)).length, 1);
    job.child.kill('SIGKILL');
    await job.done;
    assert.deepEqual(await leftovers(mark, 15000), []);
    await waitFor(() => readdirSync(join(tmp, lockDir)).length === 0, 10000, 'the stale port lock to be removed');
  } finally {
    killAll(mark);
    rmSync(tmp, { recursive: true, force: true });
  }
});

// The watchdog on its own, under each shell this machine has: a small "launcher" registers two
// stubborn process groups with it and is then SIGKILLed.
const LAUNCHER = `
import { spawn } from 'node:child_process';
import { Watchdog } from ${JSON.stringify(WATCHDOG)};
const [shell, lock] = process.argv.slice(2);
const wd = new Watchdog(0.5, { shell });
wd.removeOnDeath(lock);
for (let i = 0; i < 2; i++) {
  const c = spawn('sh', ['-c', ${JSON.stringify(STUBBORN)}], { detached: true, stdio: ['ignore', 'inherit', 'ignore'] });
  wd.watch(c.pid);
}
setInterval(() => {}, 1000);
`;

for (const shell of ['dash', 'bash']) {
  const path = ['/bin', '/usr/bin'].map((d) => join(d, shell)).find((p) => existsSync(p));
  test(`the watchdog works under ${shell}`, { skip: path ? false : `${shell} is not installed` }, async () => {
    const mark = newMark();
    const dir = mkdtempSync(join(tmpdir(), 'tprun-wd-'));
    try {
      const lock = join(dir, 'lock');
      spawnSync('sh', ['-c', `echo placeholder > '${lock}'`]);
      const app = join(dir, 'launcher.mjs');
      const { writeFileSync } = await import('node:fs');
      writeFileSync(app, LAUNCHER);
      const child = spawn(process.execPath, [app, must(path, shell), lock], { env: markEnv(mark), stdio: ['ignore', 'pipe', 'inherit'] });
      // The lock names its owner: the watchdog removes only the dead launcher's own lock.
      writeFileSync(lock, `${child.pid}\n`);
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
      await waitFor(() => out.split('ready').length === 3, 20000, 'both groups ready');
      assert.ok(procsWithMark(mark).length >= 5, 'launcher, watchdog and the stubborn processes run');
      child.kill('SIGKILL');
      assert.deepEqual(await leftovers(mark, 15000), []);
      await waitFor(() => !existsSync(lock), 10000, 'the lock to be removed');
    } finally {
      killAll(mark);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
