// src/util/proc.ts processEnded: a live process is never judged ended, also where /proc cannot be read
// (a mount namespace without it): the rendezvous would fail a live rank, the /dev/shm sweep delete its
// files, a port lease be taken from its owner. A zombie is ended; a pid nobody has is ended.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const PROC = fileURLToPath(new URL('../dist/util/proc.js', import.meta.url));

test('processEnded: a live process is alive, with or without /proc; a pid nobody has is ended', async (t) => {
  const { processEnded } = await import(PROC);
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    assert.equal(processEnded(child.pid), false);
    assert.equal(processEnded(2 ** 22 + 12345), true); // above pid_max's ceiling: nobody's
    if (process.getuid?.() !== 0) return t.skip('needs root for a mount namespace without /proc');
    const probe = `import(${JSON.stringify(PROC)}).then(({ processEnded }) => console.log(JSON.stringify(processEnded(${child.pid}))))`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', `umount -l /proc && exec ${process.execPath} -e '${probe}'`], { encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) return t.skip(`unshare -m / umount /proc not permitted here: ${r.stderr.trim().split('\n')[0]}`);
    assert.equal(r.stdout.trim(), 'false', 'a live process judged ended where /proc cannot be read');
  } finally {
    child.kill('SIGKILL');
  }
});
