// The world and the launcher run from bundles (dist/rank/world.bundle.cjs, dist/launcher/launch.bundle.cjs;
// src/util/bundle.ts): two ranks meet from them and from the ES modules (TPRUN_BUNDLE=0), CommError is
// one class whichever copy of the world's modules threw it, what a bundle leaves to ES modules of their
// own (the trace writer) still loads, and a bundle is run only while the modules it was made from are
// byte for byte what they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './helpers/procs.js';

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

// A rank program: joins the world, checks that an error thrown inside the world is the CommError that
// both the public entry and the world's own module export, meets at a barrier and leaves.
const APP = `
import { initWorld, CommError } from ${JSON.stringify(`${DIST}rank/world.js`)};
import { CommError as InboxCommError } from ${JSON.stringify(`${DIST}rank/inbox.js`)};
import { boundSlice } from ${JSON.stringify(`${DIST}rank/affinity.js`)};
const w = await initWorld({ timeoutMs: 60000 });
let err;
try { await w.recv(w.size + 5); } catch (e) { err = e; }
if (!(err instanceof CommError) || !(err instanceof InboxCommError) || CommError !== InboxCommError) throw new Error('not one CommError: ' + err);
if (err.constructor.name !== 'CommError' || !String(err).startsWith('CommError: ')) throw new Error('CommError misnamed: ' + err.constructor.name + ' / ' + err);
await w.barrier();
await w.close();
// The binding the world made (from its bundle or not) is what the engine's module of it reads.
process.stdout.write('ok ' + w.rank + ' ' + JSON.stringify(boundSlice() ?? null) + '\\n');
`;

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-'));
  const app = join(dir, 'app.mjs');
  writeFileSync(app, APP);
  return { dir, app };
}

const run = (args, env) => spawnSync(process.execPath, args, {
  env: { ...process.env, TPRUN_BUNDLE: undefined, ...env }, encoding: 'utf8', timeout: 120000,
});

test('two ranks meet from the bundle and from the ES modules (TPRUN_BUNDLE=0)', () => {
  const { dir, app } = setup();
  try {
    /** @type {Record<string, string[]>} */
    const slices = {};
    for (const bundle of ['1', '0']) {
      const r = run([CLI, '-n', '2', '--gpus', 'none', '--quiet', '-x', 'TPRUN_BUNDLE', '--', process.execPath, app],
        { TPRUN_BUNDLE: bundle, CUDA_VISIBLE_DEVICES: undefined });
      assert.equal(r.status, 0, r.stderr);
      const lines = r.stdout.trim().split('\n').sort();
      assert.deepEqual(lines.map((l) => l.split(' ').slice(0, 2).join(' ')), ['ok 0', 'ok 1']);
      slices[bundle] = lines.map((l) => l.split(' ')[2]);
    }
    assert.deepEqual(slices['1'], slices['0'], 'the CPU slice each rank was bound to, as the engine sees it');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the launcher from its bundle still loads what it left outside (--trace), and says nothing', () => {
  const { dir } = setup();
  try {
    const trace = join(dir, 'trace.json');
    const r = run([CLI, '-n', '2', '--gpus', 'none', '--quiet', '--trace', trace, '--', process.execPath, '-e', '0'], { CUDA_VISIBLE_DEVICES: undefined });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(statSync(trace).size > 0, 'trace written');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a bundle runs while the modules it was made from are byte for byte what they were, whatever their times; not once one changed', async () => {
  const { loadBundle, recordInputs } = await import('../dist/util/bundle.js');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-'));
  try {
    const mod = join(dir, 'mod.js');
    const file = join(dir, 'b.cjs');
    writeFileSync(mod, 'export const v = 42;\n');
    writeFileSync(file, 'module.exports = { v: 42 };\n');
    recordInputs(file, [mod]);
    const past = new Date(Date.now() - 60_000);
    const future = new Date(Date.now() + 60_000);
    utimesSync(file, past, past);
    // Newer than the bundle, as a copy of dist/ may leave them: the same bytes, so the bundle runs.
    utimesSync(mod, future, future);
    assert.equal(loadBundle(file)?.v, 42);
    // Changed, the same size, and older than the bundle (cp -p of another build): not run.
    writeFileSync(mod, 'export const v = 43;\n');
    utimesSync(mod, new Date(0), new Date(0));
    assert.equal(loadBundle(file), undefined);
    // Gone.
    rmSync(mod);
    assert.equal(loadBundle(file), undefined);
    // A list without hashes (an older build's [path, size]) or none at all: not trusted either.
    writeFileSync(mod, 'export const v = 42;\n');
    assert.equal(loadBundle(file)?.v, 42);
    writeFileSync(`${file}.inputs.json`, JSON.stringify({ inputs: [['mod.js', 21]] }));
    assert.equal(loadBundle(file), undefined);
    rmSync(`${file}.inputs.json`);
    assert.equal(loadBundle(file), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A copy of dist/ as `cp -r` makes it (new times, in copy order), with the packages in reach. */
function copyDist() {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-copy-'));
  cpSync(DIST, join(dir, 'dist'), { recursive: true });
  symlinkSync(fileURLToPath(new URL('../node_modules', import.meta.url)), join(dir, 'node_modules'));
  return dir;
}

/** Which world a program from `dist` loads, and what it says on stderr (TPRUN_DEBUG set or not). */
function whichWorld(dist, env = {}) {
  const prog = `import { loadBundle } from ${JSON.stringify(join(dist, 'util/bundle.js'))};
const b = loadBundle(${JSON.stringify(join(dist, 'rank/world.bundle.cjs'))});
loadBundle(${JSON.stringify(join(dist, 'rank/world.bundle.cjs'))});
process.stdout.write(typeof b?.initWorld === 'function' ? 'bundle' : 'modules');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', prog], { env: { ...process.env, TPRUN_DEBUG: undefined, TPRUN_TRACE: undefined, TPRUN_EVENTS: undefined, ...env }, encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr);
  return { world: r.stdout, stderr: r.stderr };
}

test('a copy of dist/ whose modules look newer than its bundles still runs the bundles; an edited module never does, and TPRUN_DEBUG says why once', (t) => {
  const dir = copyDist();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dist = join(dir, 'dist');
  const past = new Date(Date.now() - 3600_000);
  const future = new Date(Date.now() + 3600_000);
  utimesSync(join(dist, 'rank/world.bundle.cjs'), past, past);
  for (const f of readdirSync(join(dist, 'rank'))) if (f.endsWith('.js')) utimesSync(join(dist, 'rank', f), future, future);
  assert.deepEqual(whichWorld(dist, { TPRUN_DEBUG: '1' }), { world: 'bundle', stderr: '' });
  // One module edited (a comment: the same code, other bytes), its time put back before the bundle's.
  const edited = join(dist, 'rank/peer-world.js');
  writeFileSync(edited, `${readFileSync(edited, 'utf8')}// edited\n`);
  utimesSync(edited, new Date(0), new Date(0));
  assert.deepEqual(whichWorld(dist), { world: 'modules', stderr: '' }, 'silent unless asked');
  const said = whichWorld(dist, { TPRUN_DEBUG: '1' });
  assert.equal(said.world, 'modules');
  assert.deepEqual(said.stderr.trim().split('\n'), [`tprun: ${join(dist, 'rank/world.bundle.cjs')} not used, its ES modules are: peer-world.js is not the module it was made from (rebuilt without the bundles, or edited)`]);
  assert.equal(whichWorld(dist, { TPRUN_TRACE: join(dir, 'trace.json') }).stderr.split('\n').filter(Boolean).length, 1, 'traced: said too');
});

test('a truncated or missing bundle is not loaded (the ES modules run, TPRUN_DEBUG says why); a bundle whose own code throws is not retried as ES modules', async (t) => {
  const dir = copyDist();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dist = join(dir, 'dist');
  const bundle = join(dist, 'rank/world.bundle.cjs');
  // Cut short, as a full disk or an interrupted copy leaves it: every rank died of `Unexpected end of input`.
  const whole = readFileSync(bundle);
  writeFileSync(bundle, whole.subarray(0, whole.length >> 1));
  assert.deepEqual(whichWorld(dist), { world: 'modules', stderr: '' }, 'silent unless asked');
  assert.deepEqual(whichWorld(dist, { TPRUN_DEBUG: '1' }).stderr.trim().split('\n'),
    [`tprun: ${bundle} not used, its ES modules are: world.bundle.cjs is not the file the build wrote (cut short or changed since)`]);
  // Ranks of a real launch from that copy meet over the ES modules.
  const app = join(dir, 'app.mjs');
  writeFileSync(app, APP.replaceAll(DIST, `${dist}/`));
  const r = run([join(dist, 'cli.js'), '-n', '2', '--gpus', 'none', '--quiet', '--', process.execPath, app], { CUDA_VISIBLE_DEVICES: undefined });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => l.split(' ').slice(0, 2).join(' ')).sort(), ['ok 0', 'ok 1']);
  rmSync(bundle);
  assert.deepEqual(whichWorld(dist, { TPRUN_DEBUG: '1' }).stderr.trim().split('\n'),
    [`tprun: ${bundle} not used, its ES modules are: world.bundle.cjs, which the build wrote, is missing`]);

  // A bundle as the build wrote it whose module body throws (a knob refused at load): that error is ours
  // and reaches the caller; running the ES modules instead would only throw it again, later.
  const { loadBundle, recordInputs } = await import('../dist/util/bundle.js');
  const mod = join(dir, 'mod.js');
  const file = join(dir, 'b.cjs');
  writeFileSync(mod, 'export const v = 42;\n');
  writeFileSync(file, 'throw new Error("TPRUN_X must be 0 or 1");\n');
  recordInputs(file, [mod]);
  assert.throws(() => loadBundle(file), /TPRUN_X must be 0 or 1/);
});

test('each start stats the inputs and hashes only those whose size or mtime is not as recorded: an edit of the same size with a new mtime is refused, a copy (new mtimes, same bytes) is used', async (t) => {
  const { loadBundle, recordInputs } = await import('../dist/util/bundle.js');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const mod = join(dir, 'mod.js');
  const file = join(dir, 'b.cjs');
  writeFileSync(mod, 'export const v = 42;\n');
  writeFileSync(file, 'module.exports = { v: 42 };\n');
  recordInputs(file, [mod]);
  // What the shortcut compares: size and mtimeMs as stat gives them, beside the hash.
  const rec = JSON.parse(readFileSync(`${file}.inputs.json`, 'utf8'));
  assert.deepEqual(rec.inputs.map((i) => i.slice(0, 3)), [['mod.js', 21, statSync(mod).mtimeMs]]);
  assert.deepEqual(rec.bundle.slice(0, 3), ['b.cjs', 28, statSync(file).mtimeMs]);
  assert.equal(loadBundle(file)?.v, 42);
  // A copy: every file new mtimes, the same bytes; hashed, and used.
  const later = new Date(Date.now() + 120_000);
  utimesSync(mod, later, later);
  utimesSync(file, later, later);
  assert.equal(loadBundle(file)?.v, 42);
  // An edit of the same size, with the new mtime an edit gets: hashed, and refused.
  writeFileSync(mod, 'export const v = 43;\n');
  assert.equal(statSync(mod).size, 21);
  assert.equal(loadBundle(file), undefined);
});
