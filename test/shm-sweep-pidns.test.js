// The /dev/shm sweep removes ring files whose creator is gone, judged by the creator's pid. A pid means
// something only in its own PID namespace: ranks in containers on one host that share /dev/shm but not
// pids (`unshare --pid`) have pids this process cannot see, and a LIVE rank's file was deleted. The
// name now carries the creator's namespace and only files of our namespace are judged by pid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import * as shm from '../dist/rank/shm-link.js';

test('the sweep judges by pid only files of our PID namespace; older names only by age', () => {
  const { staleRingFile, ringFileName } = shm;
  const gone = () => true;
  const alive = () => false;
  const name = (pid, ns) => ringFileName('0123abcd', 1, pid, ns, 'deadbeef');
  assert.equal(name(42, '4026531836'), 'tprun-0123abcd-1-42-ns4026531836-deadbeef');
  const ours = { ns: '4026531836', ageMs: () => 0 };
  assert.equal(staleRingFile(name(42, '4026531836'), { ...ours, gone }), true, 'ours and dead');
  assert.equal(staleRingFile(name(42, '4026531836'), { ...ours, gone: alive }), false, 'ours and alive');
  assert.equal(staleRingFile(name(42, '4026532999'), { ...ours, gone }), false, 'another namespace: its pid means nothing here');
  assert.equal(staleRingFile(name(42, '4026532999'), { ...ours, gone, ageMs: () => 1e12 }), false, 'another namespace, however old');
  assert.equal(staleRingFile(name(42, '0'), { ...ours, gone }), false, 'a creator that could not read its namespace');
  assert.equal(staleRingFile(name(42, '0'), { ...ours, ns: '0', gone }), false, 'we cannot read ours: nothing is judged by pid');
  // An older tprun's name (no namespace): it may be a live rank of another namespace, so only by age too.
  const legacy = 'tprun-0123abcd-1-42-deadbeef';
  assert.equal(staleRingFile(legacy, { ...ours, gone }), false, 'a fresh older name whose pid names nobody here');
  assert.equal(staleRingFile(legacy, { ...ours, gone, ageMs: () => 25 * 3600_000 }), true, 'an older name past a day, pid gone');
  assert.equal(staleRingFile(legacy, { ...ours, gone: alive, ageMs: () => 25 * 3600_000 }), false, 'an older name whose pid lives');
  assert.equal(staleRingFile('tprun-0123abcd.sock', { ...ours, gone }), false, 'not a ring file');
  assert.equal(staleRingFile('other-1-42-ns4026531836-deadbeef', { ...ours, gone }), false, 'not tprun\'s');
  // An older tprun's sweep cannot take the new names for its own (it would judge them by pid).
  assert.doesNotMatch(name(42, '4026531836'), /^tprun-[0-9a-f]+-\d+-(\d+)-[0-9a-f]+$/);
});

const APP = fileURLToPath(new URL('./helpers/shm-ring-app.js', import.meta.url));
const unshareOk = process.platform === 'linux' && spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'sh', '-c', 'echo 1000 > /proc/sys/kernel/ns_last_pid'], { stdio: 'ignore' }).status === 0;

/** A pid nobody has in this namespace, below pid_max (a new namespace's pids share it). */
function freePid() {
  const max = Number(spawnSync('cat', ['/proc/sys/kernel/pid_max'], { encoding: 'utf8' }).stdout) || 32768;
  for (let p = max - 1; p > 1000; p--) {
    try { process.kill(p, 0); } catch (e) { if (e.code === 'ESRCH') return p; }
  }
  throw new Error('no free pid');
}

/** Starts shm-ring-app.js (under `prefix`, e.g. unshare); resolves once it has made its file. */
function ringApp(prefix, tag, rank) {
  const p = spawn(prefix[0] ?? process.execPath, [...prefix.slice(1), ...(prefix.length ? [process.execPath] : []), APP, tag, String(rank)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((res) => p.on('exit', (code, signal) => res({ code, signal })));
  const made = new Promise((res, rej) => {
    let out = '';
    p.stdout.on('data', (d) => { out += d; if (out.includes('\n')) res(JSON.parse(out.split('\n')[0])); });
    p.on('exit', (code) => rej(new Error(`shm-ring-app exited (${code}) before making its file`)));
  });
  return { p, made, exited };
}

test('a live rank in another PID namespace keeps its ring file; a dead one of ours loses it', {
  timeout: 120_000,
  skip: !unshareOk && 'needs unshare --pid --fork --mount-proc and a writable ns_last_pid (root on Linux)',
}, async () => {
  const tag = randomBytes(6).toString('hex');
  // Rank 1 in a PID namespace of its own, at a pid nobody has here (as a rank in its own container).
  const pid = freePid();
  const inner = ringApp(['setpriv', '--pdeathsig', 'SIGKILL', 'unshare', '--pid', '--fork', '--kill-child', '--mount-proc',
    'sh', '-c', `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid && "$0" "$@"`], tag, 1);
  // Rank 2 of this namespace, killed outright (SIGKILL) after making its file: the sweep's own case.
  const dead = ringApp([], tag, 2);
  try {
    const a = await inner.made;
    assert.equal(a.pid, pid, 'the inner rank runs at the pid chosen');
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, 'its pid names nobody here');
    const b = await dead.made;
    dead.p.kill('SIGKILL');
    await dead.exited;
    assert.ok(existsSync(b.path), 'a SIGKILLed rank leaves its file');
    // Rank 0 here makes its file, which sweeps /dev/shm first.
    const out = new shm.ShmOut(tag, 0, 2, 2);
    out.close();
    assert.ok(existsSync(a.path), `the live rank's file ${a.path} (pid ${pid} in its own namespace) was swept`);
    assert.ok(!existsSync(b.path), 'the dead rank of our namespace had its file swept');
    inner.p.stdin.end();
    assert.deepEqual(await inner.exited, { code: 0, signal: null });
    assert.ok(!existsSync(a.path), 'the inner rank removed its own file');
  } finally {
    inner.p.kill('SIGKILL');
    dead.p.kill('SIGKILL');
  }
});

// A creator that died but whose parent has not reaped it (a zombie) still answers kill(pid, 0): the sweep
// judges liveness as the rendezvous does (src/util/proc.ts processEnded), so its file goes too. It was kept.
test('the sweep removes a ring file whose creator is a zombie', { timeout: 60_000, skip: (process.platform !== 'linux' || !shm.ShmOut.available()) && 'needs Linux /dev/shm' }, async () => {
  const { pidNamespace, processEnded } = await import('../dist/util/proc.js');
  // `sleep 0` ends at once; its parent, exec'd into `sleep 30`, never reaps it.
  const holder = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const zombie = Number(await new Promise((res) => holder.stdout.once('data', (d) => res(String(d).trim()))));
    for (let i = 0; i < 200 && !/^\d+ \(.*\) Z/s.test(spawnSync('cat', [`/proc/${zombie}/stat`], { encoding: 'utf8' }).stdout); i++) await new Promise((r) => setTimeout(r, 10));
    assert.doesNotThrow(() => process.kill(zombie, 0), 'a zombie still answers kill');
    assert.equal(processEnded(zombie), true);
    const tag = randomBytes(6).toString('hex');
    const path = `/dev/shm/${shm.ringFileName(tag, 1, zombie, pidNamespace() ?? '0', 'deadbeef')}`;
    writeFileSync(path, '');
    try {
      new shm.ShmOut(tag, 0, 2, 2).close(); // making a file sweeps /dev/shm first
      assert.ok(!existsSync(path), 'the zombie creator\'s file was kept');
    } finally { rmSync(path, { force: true }); }
  } finally { holder.kill('SIGKILL'); }
});
