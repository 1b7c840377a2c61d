// Issue #11 item 11 (ENOSPC part): a write error during convert / build names the file being written,
// exits non-zero and leaves no partial output. The disk is a 1 MiB tmpfs (root only; skipped otherwise).
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from '../helpers/procs.js';
import { generateCheckpoint } from 'tprun';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tprun-enospc-'));
const FULL = path.join(work, 'full');
fs.mkdirSync(FULL);
const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', FULL], { encoding: 'utf8' });
const skip = mount.status === 0 ? false : `cannot mount a small tmpfs (${(mount.stderr || mount.error?.message || '').trim().split('\n')[0]}); needs root`;
test.after(() => {
  if (!skip) spawnSync('umount', [FULL]);
  fs.rmSync(work, { recursive: true, force: true });
});

// ~5 MB of weights: more than the tmpfs holds whatever the layout.
const MODEL = path.join(work, 'model');
const CKPT = path.join(work, 'ckpt');
generateCheckpoint({ preset: 'brown', layers: 1, out: MODEL, seed: 2 });

function tprun(args) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300000, env: { ...process.env, TPRUN_QUIET: '1' } });
  return { code: r.status, signal: r.signal, stderr: r.stderr };
}

const SMALL = ['--max-seq-len', '64', '--max-input-len', '32'];
const CASES = [
  ['convert --tp 1', ['convert', '--model', MODEL, '--tp', '1']],
  ['convert --tp 2', ['convert', '--model', MODEL, '--tp', '2']],
  ['convert --tp 2 --quant int8_wo', ['convert', '--model', MODEL, '--tp', '2', '--quant', 'int8_wo']],
  ['build --model --tp 2', ['build', '--model', MODEL, '--tp', '2', ...SMALL]],
  ['build --checkpoint', ['build', '--checkpoint', CKPT, ...SMALL]],
];

test('setup: a checkpoint on a disk with room', { skip }, () => {
  const r = tprun(['convert', '--model', MODEL, '--tp', '1', '--out', CKPT]);
  assert.equal(r.code, 0, r.stderr);
});

for (const [name, args] of CASES) {
  test(`${name}: a full disk names the file being written, exits non-zero, leaves nothing`, { skip }, () => {
    const out = path.join(FULL, 'out');
    const r = tprun([...args, '--out', out]);
    assert.notEqual(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split('\n').filter((l) => /ENOSPC/.test(l));
    assert.ok(lines.length >= 1, `an ENOSPC line:\n${r.stderr}`);
    // Every rank that hit it says which file: a path on the full disk, not just "write".
    for (const l of lines) assert.match(l, new RegExp(`${FULL}/\\S+: ENOSPC: no space left on device`), l);
    // One rank: one line and nothing else (with several, the launcher adds which rank failed).
    if (!args.includes('2')) assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual(fs.readdirSync(FULL), [], 'no partial output, no temporary directory');
  });
}
