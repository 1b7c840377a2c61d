// A user's script whose initWorld() gets bad input (a TPRUN_* knob spelt wrong) ends like tprun's own
// commands: one line naming the option and the rank, exit 2, the job down. It printed a stack trace from
// every rank and exited 1 (reported by the launcher as a rank that crashed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { runTprun } from './helpers/procs.js';

const APP = fileURLToPath(new URL('./helpers/world-app.js', import.meta.url));

test('a bad TPRUN_* knob in a script\'s initWorld: one line naming it, shown once, exit 2, no stack trace', { timeout: 120_000 }, async () => {
  const r = await runTprun(['-n', '3', '--gpus', 'none', '--', process.execPath, APP, 'hello'], { env: { TPRUN_SPIN_US: 'fast' } });
  assert.equal(r.code, 2, r.stderr);
  // Every rank meets the same knob; the launcher shows tprun's alike lines once (src/launcher/output.ts),
  // next to its own line naming the rank that ended the job.
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 2, r.stderr);
  assert.equal(lines.filter((l) => /^tprun: rank [0-2]: TPRUN_SPIN_US=fast: not a whole number >= 0$/.test(l)).length, 1, r.stderr);
  assert.equal(lines.filter((l) => /^tprun: rank [0-2] \(pid \d+\) exited with code 2$/.test(l)).length, 1, r.stderr);
  assert.deepEqual(r.left, []);
});

// After initWorld returned, bad input the script meets and leaves uncaught (here rank 1 opens a checkpoint
// directory that is not there) printed Node's stack trace and exited 1; a bug of the script's own still does.
test('an InputError a script leaves uncaught after initWorld: one line naming its rank, exit 2; a bug keeps its stack', { timeout: 120_000 }, async () => {
  const r = await runTprun(['-n', '3', '--gpus', 'none', '--', process.execPath, APP, 'bad-input', '/nonexistent/ckpt']);
  assert.equal(r.code, 2, r.stderr);
  assert.doesNotMatch(r.stderr, /^ {4}at /m, 'a stack trace');
  assert.deepEqual(r.stderr.trim().split('\n'), [
    'tprun: rank 1: checkpoint /nonexistent/ckpt: no such directory',
    r.stderr.match(/^tprun: rank 1 \(pid \d+\) exited with code 2$/m)?.[0],
  ], r.stderr);
  assert.deepEqual(r.left, []);
  const bug = await runTprun(['-n', '2', '--gpus', 'none', '--', process.execPath, APP, 'bug']);
  assert.equal(bug.code, 1, bug.stderr);
  assert.match(bug.stderr, /^TypeError: Cannot read properties of undefined \(reading 'bug'\)\n {4}at /m);
  assert.match(bug.stderr, /^tprun: rank 1 \(pid \d+\) exited with code 1$/m);
  assert.deepEqual(bug.left, []);
});

test('a script that catches initWorld\'s InputError, or handles uncaught errors itself, keeps that behaviour', { timeout: 60_000 }, () => {
  const env = { ...process.env, TPRUN_RANK: '0', TPRUN_WORLD_SIZE: '2', TPRUN_SPIN_US: 'fast' };
  const caught = spawnSync(process.execPath, ['--input-type=module', '-e',
    "import { initWorld } from 'tprun'; try { await initWorld(); } catch (e) { console.log('caught', e.name); } process.exitCode = 5;"],
  { env, encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  assert.equal(caught.status, 5, caught.stderr);
  assert.match(caught.stdout, /caught InputError/);
  const own = spawnSync(process.execPath, ['--input-type=module', '-e',
    "import { initWorld } from 'tprun'; process.on('uncaughtException', (e) => { console.log('mine', e.name); process.exit(7); }); await initWorld();"],
  { env, encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  assert.equal(own.status, 7, own.stderr);
  assert.match(own.stdout, /mine InputError/);
});

test('a script that catches initWorld\'s InputError and retries 12 times: no listener piles up, no MaxListenersExceededWarning', { timeout: 60_000 }, () => {
  const env = { ...process.env, TPRUN_RANK: '0', TPRUN_WORLD_SIZE: '2', TPRUN_SPIN_US: 'fast' };
  const r = spawnSync(process.execPath, ['--input-type=module', '-e',
    "import { initWorld } from 'tprun'; for (let i = 0; i < 12; i++) { try { await initWorld(); } catch {} } console.log('listeners', process.listenerCount('uncaughtExceptionMonitor'));"],
  { env, encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /MaxListenersExceeded/);
  assert.match(r.stdout, /^listeners 1$/m);
});
