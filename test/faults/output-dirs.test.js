// Issue #11 item 2: `--out` must never cost the user a file tprun did not write. Real `tprun convert` and
// `tprun build` processes (both --model and --checkpoint) against the cases that used to delete data:
// --out . (the cwd), the model's parent, a directory of unrelated files, a regular file, home, the input.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from '../helpers/procs.js';
import { generateCheckpoint } from 'tprun';
import { commitTemp, openTemp, tempSibling } from '../../dist/checkpoint/outdir.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tprun-outdir-'));
test.after(() => fs.rmSync(work, { recursive: true, force: true }));

// A small random LLaMA (one layer) keeps each real conversion cheap; its parent holds nothing else of ours.
const MODEL = path.join(work, 'models', 'tiny');
generateCheckpoint({ preset: 'brown', layers: 1, out: MODEL, seed: 3 });
const HOME = path.join(work, 'home');
fs.mkdirSync(HOME);

function tprun(args, { cwd = work, timeout = 180000 } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd, timeout, encoding: 'utf8', env: { ...process.env, HOME, TPRUN_QUIET: '1' },
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under `dir` (relative path → sha256), to prove nothing was touched. */
function snapshot(dir) {
  const out = {};
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

function userDir(name) {
  const d = path.join(work, name);
  fs.mkdirSync(path.join(d, 'notes'), { recursive: true });
  fs.writeFileSync(path.join(d, 'thesis.tex'), 'years of work\n');
  fs.writeFileSync(path.join(d, 'notes', 'a.txt'), 'a\n');
  return d;
}

function assertRefused(r, re, what) {
  assert.equal(r.code, 2, `${what}: exit ${r.code} ${r.signal ?? ''}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `${what}: one line, got:\n${r.stderr}`);
  assert.match(lines[0], re, what);
}

// A tprun checkpoint, the input of `build --checkpoint`.
const CKPT = path.join(work, 'ckpts', 'tiny-tp1');
test('setup: convert writes a checkpoint whose config.json marks it as tprun\'s', () => {
  const r = tprun(['convert', '--model', MODEL, '--tp', '1', '--out', CKPT]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(CKPT, 'config.json'), 'utf8')).producer, 'tprun');
});

/** @type {[string, string[]][]} */
const COMMANDS = [
  ['convert', ['convert', '--model', MODEL, '--tp', '1']],
  ['build --model', ['build', '--model', MODEL, '--tp', '1', '--max-seq-len', '64', '--max-input-len', '32']],
  ['build --checkpoint', ['build', '--checkpoint', CKPT, '--max-seq-len', '64', '--max-input-len', '32']],
];

for (const [name, base] of COMMANDS) {
  test(`${name}: --out . in a directory of user files is refused, nothing deleted`, () => {
    const d = userDir(`cwd-${name.replace(/\W+/g, '-')}`);
    const before = snapshot(d);
    for (const extra of [[], ['--force']]) {
      const r = tprun([...base, '--out', '.', ...extra], { cwd: d });
      assertRefused(r, /^tprun( \w+)?: --out \.: is the current directory; tprun never replaces it/, `${name} --out . ${extra}`);
      assert.deepEqual(snapshot(d), before);
    }
  });

  test(`${name}: --out the input's parent (or the input) is refused, the model survives`, () => {
    const input = base.includes('--checkpoint') ? CKPT : MODEL;
    const before = snapshot(path.dirname(input));
    for (const out of [path.dirname(input), input]) {
      for (const extra of [[], ['--force']]) {
        const r = tprun([...base, '--out', out, ...extra]);
        assertRefused(r, new RegExp(`^tprun( \\w+)?: --out ${out}: (is|contains) the input .*never replaces it`), `${name} --out ${out} ${extra}`);
      }
    }
    assert.deepEqual(snapshot(path.dirname(input)), before);
  });

  test(`${name}: --out a parent of the cwd, or home, is refused even with --force`, () => {
    const cwd = path.join(work, 'deep', 'er');
    fs.mkdirSync(cwd, { recursive: true });
    fs.writeFileSync(path.join(cwd, 'keep.txt'), 'x');
    fs.writeFileSync(path.join(HOME, '.bashrc'), 'y');
    for (const [out, why] of [[path.join(work, 'deep'), 'contains the current directory'], [HOME, 'is your home directory'], ['/', 'contains the current directory']]) {
      const r = tprun([...base, '--out', out, '--force'], { cwd });
      assertRefused(r, new RegExp(`--out ${out}: ${why}`), `${name} --out ${out}`);
    }
    assert.equal(fs.readFileSync(path.join(cwd, 'keep.txt'), 'utf8'), 'x');
    assert.equal(fs.readFileSync(path.join(HOME, '.bashrc'), 'utf8'), 'y');
  });

  test(`${name}: a directory of unrelated files or a regular file is refused; nothing deleted`, () => {
    const d = userDir(`foreign-${name.replace(/\W+/g, '-')}`);
    const before = snapshot(d);
    const r = tprun([...base, '--out', d]);
    assertRefused(r, new RegExp(`--out ${d}: is not empty and was not written by tprun .*--force`), `${name} foreign dir`);
    assert.deepEqual(snapshot(d), before);
    const f = path.join(work, `file-${name.replace(/\W+/g, '-')}.txt`);
    fs.writeFileSync(f, 'precious');
    for (const extra of [[], ['--force']]) {
      assertRefused(tprun([...base, '--out', f, ...extra]), new RegExp(`--out ${f}: exists and is not a directory`), `${name} file`);
    }
    assert.equal(fs.readFileSync(f, 'utf8'), 'precious');
    // No temporary sibling left next to it either.
    assert.deepEqual(fs.readdirSync(work).filter((n) => n.startsWith('.')), []);
  });

  test(`${name}: an empty directory is used, a tprun directory is replaced, --force replaces a foreign one`, () => {
    const out = path.join(work, `out-${name.replace(/\W+/g, '-')}`);
    fs.mkdirSync(out);
    let r = tprun([...base, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const first = snapshot(out);
    assert.ok(Object.keys(first).includes('config.json'));
    r = tprun([...base, '--out', out]);
    assert.equal(r.code, 0, `tprun's own directory is replaced: ${r.stderr}`);
    assert.deepEqual(Object.keys(snapshot(out)).sort(), Object.keys(first).sort());
    const foreign = userDir(`forced-${name.replace(/\W+/g, '-')}`);
    r = tprun([...base, '--out', foreign, '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!fs.existsSync(path.join(foreign, 'thesis.tex')));
    assert.ok(fs.existsSync(path.join(foreign, 'config.json')));
  });
}

test('inside a world (tprun -n 2 -- tprun convert), every rank refuses a foreign --out: nothing deleted', () => {
  const d = userDir('world-foreign');
  const before = snapshot(d);
  const r = tprun(['-n', '2', '--', process.execPath, CLI, 'convert', '--model', MODEL, '--tp', '2', '--out', d]);
  assert.notEqual(r.code, 0, r.stderr);
  assert.match(r.stderr, /is not empty and was not written by tprun/);
  assert.deepEqual(snapshot(d), before);
  assert.deepEqual(fs.readdirSync(work).filter((n) => n.startsWith('.')), []);
});

test('the rename itself (what a node without rank 0\'s filesystem runs) refuses a foreign directory and drops its temp', () => {
  const d = userDir('commit-foreign');
  const before = snapshot(d);
  const tmp = tempSibling(d, 'x1');
  openTemp(tmp);
  fs.writeFileSync(path.join(tmp, 'config.json'), '{"producer":"tprun"}');
  assert.throws(() => commitTemp(tmp, d), /is not empty and was not written by tprun/);
  assert.ok(!fs.existsSync(tmp));
  assert.deepEqual(snapshot(d), before);
  const cwd = path.join(work, 'commit-cwd');
  fs.mkdirSync(cwd);
  fs.writeFileSync(path.join(cwd, 'keep.txt'), 'x');
  const prev = process.cwd();
  process.chdir(cwd);
  try {
    const cwdTmp = tempSibling(cwd, 'x2');
    openTemp(cwdTmp);
    assert.throws(() => commitTemp(cwdTmp, '.', { force: true }), /is the current directory/);
    assert.ok(!fs.existsSync(cwdTmp));
    assert.equal(fs.readFileSync(path.join(cwd, 'keep.txt'), 'utf8'), 'x');
  } finally {
    process.chdir(prev);
  }
});

test('gen-checkpoint follows the same rule (--out ., a foreign directory; --force for the latter only)', () => {
  const d = userDir('gen-foreign');
  const before = snapshot(d);
  const gen = ['gen-checkpoint', '--preset', 'brown', '--layers', '1'];
  assertRefused(tprun([...gen, '--out', '.', '--force'], { cwd: d }), /^tprun gen-checkpoint: --out \.: is the current directory/, 'gen --out .');
  assertRefused(tprun([...gen, '--out', d]), /is not empty and was not written by tprun/, 'gen foreign');
  assert.deepEqual(snapshot(d), before);
  const r = tprun([...gen, '--out', d, '--force']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(fs.existsSync(path.join(d, 'model.safetensors')) && !fs.existsSync(path.join(d, 'thesis.tex')));
});
