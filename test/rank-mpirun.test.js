// Worlds started by Open MPI's mpirun (Debian's openmpi-bin): identity from OMPI_* variables, rendezvous
// over an ipc socket in mpirun's private session directory, no other setup.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));
let mpirun;
try { mpirun = execFileSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' }).trim(); } catch { /* absent */ }

test('mpirun -np 2 node app.js forms a world', { skip: !mpirun && 'mpirun not installed (apt-get install openmpi-bin)' }, async () => {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^(TPRUN_|MASTER_|RANK$|WORLD_SIZE$)/.test(k)) delete env[k];
  const { stdout } = await run(mpirun, ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, APP, 'hello'], { timeout: 40000, env });
  const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).sort((a, b) => a.rank - b.rank);
  assert.deepEqual(lines, [0, 1].map((rank) => ({ rank, size: 2, sum: 3, source: 'openmpi' })));
});

test('mpirun -np 3 runs every collective', { skip: !mpirun && 'mpirun not installed' }, async () => {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^(TPRUN_|MASTER_)/.test(k)) delete env[k];
  const { stdout } = await run(mpirun, ['--allow-run-as-root', '--oversubscribe', '-np', '3', process.execPath, APP, 'all'], { timeout: 50000, env });
  assert.equal(stdout.split('\n').filter((l) => l.includes('"ok":true') && l.includes('openmpi')).length, 3);
});
