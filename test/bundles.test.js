// The world, the launcher and the `build` and `convert` commands run from bundles (dist/rank/world.bundle.cjs,
// dist/launcher/launch.bundle.cjs, dist/commands/NAME.bundle.cjs; src/util/bundle.ts): two ranks meet from
// them and from the ES modules (TPRUN_BUNDLE=0), a command writes the same bytes and says the same words
// from its bundle as from its modules, CommError is
// one class whichever copy of the world's modules threw it, what a bundle leaves to ES modules of their
// own (the trace writer) still loads, and a bundle is run only while the modules it was made from are
// byte for byte what they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './helpers/procs.js';
import { writeTinyLlama } from './helpers/tiny-model.js';

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
  // What the CLI reads its version from, beside dist/ as in an installed package.
  cpSync(fileURLToPath(new URL('../package.json', import.meta.url)), join(dir, 'package.json'));
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

const MODEL = fileURLToPath(new URL('../models/brown-llama-a', import.meta.url));

/**
 * Every file under `dir` (relative path → bytes), for comparing two outputs byte for byte.
 * @param {string} dir
 * @returns {Record<string, Buffer>}
 */
function tree(dir, rel = '') {
  /** @type {Record<string, Buffer>} */
  const out = {};
  for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const r = join(rel, e.name);
    if (e.isDirectory()) Object.assign(out, tree(dir, r));
    else out[r] = readFileSync(join(dir, r));
  }
  return out;
}

/** Runs `tprun ARGS` from `cli`, by default with TPRUN_DEBUG set (a bundle passed over says why on stderr). */
const tprun = (cli, args, env = {}) => run([cli, ...args], { TPRUN_DEBUG: '1', CUDA_VISIBLE_DEVICES: undefined, ...env });
/** The same under a German locale, without TPRUN_DEBUG (whose stack traces name the files that ran). */
const german = { TPRUN_DEBUG: undefined, LANG: 'de_DE.UTF-8', LC_ALL: undefined, LC_MESSAGES: undefined, LANGUAGE: undefined };

test('build and convert from their bundles write what their ES modules write; the weight workers and the SIMD seed are found from the bundle as from the modules', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-cmd-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Over the parallel writer's floor (64 MiB of float32 engine weights): its workers are started by the
  // path weight-jobs.js names relative to itself, which a bundle elsewhere in dist/ must resolve alike.
  const model = join(dir, 'model');
  mkdirSync(model);
  writeTinyLlama(model, { H: 1024, I: 4096, V: 8192, nh: 8, nkv: 2, hd: 128 });
  /** @type {Record<string, Record<string, Record<string, Buffer>>>} */
  const outs = { build: {}, convert: {} };
  /** @type {Record<string, object>} */
  const writes = {};
  for (const bundle of ['1', '0']) {
    const engine = join(dir, `engine${bundle}`);
    const trace = join(dir, `trace${bundle}.json`);
    const b = tprun(CLI, ['build', '--model', model, '--tp', '1', '--dtype', 'float32', '--out', engine, '--quiet', '--trace', trace], { TPRUN_BUNDLE: bundle, TPRUN_BUILD_THREADS: '2' });
    assert.equal(b.status, 0, b.stderr);
    // TPRUN_DEBUG names every bundle that is not used: none here with bundles on.
    if (bundle === '1') assert.doesNotMatch(b.stderr, /not used/);
    writes[bundle] = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.find((e) => e.name === 'weights.write').args;
    outs.build[bundle] = tree(engine);
    rmSync(engine, { recursive: true });
    // Two ranks, each re-running the command from the parse of the process that started them.
    const ckpt = join(dir, `ckpt${bundle}`);
    const c = tprun(CLI, ['convert', '--model', MODEL, '--tp', '2', '--out', ckpt], { TPRUN_BUNDLE: bundle });
    assert.equal(c.status, 0, c.stderr);
    if (bundle === '1') assert.doesNotMatch(c.stderr, /not used/);
    outs.convert[bundle] = tree(ckpt);
  }
  assert.equal(writes['1'].writer, 'parallel');
  assert.equal(writes['1'].worker_code, 'bundle');
  assert.equal(writes['0'].worker_code, 'modules');
  // The seed made at `npm run build`, read from beside half-simd.js (simd-seed-file.ts), either way.
  assert.deepEqual([writes['1'].simd_seed, writes['0'].simd_seed], ['kept', 'kept']);
  for (const cmd of ['build', 'convert']) {
    assert.deepEqual(Object.keys(outs[cmd]['1']).sort(), Object.keys(outs[cmd]['0']).sort());
    for (const [f, bytes] of Object.entries(outs[cmd]['1'])) assert.ok(bytes.equals(outs[cmd]['0'][f]), `${cmd}: ${f} differs`);
  }
});

test("a command's bundle parses as its modules do: yargs' own messages in the user's language, help, bad input", () => {
  for (const args of [['build', '--model', MODEL], ['convert', '--out', '/nonexistent/x', '--tp', 'two'], ['build', '--help']]) {
    const got = ['1', '0'].map((bundle) => tprun(CLI, args, { ...german, TPRUN_BUNDLE: bundle }));
    assert.deepEqual([got[0].status, got[0].stdout, got[0].stderr], [got[1].status, got[1].stdout, got[1].stderr], args.join(' '));
  }
  // yargs found its locale files from the bundle (a bundle that looked for them beside itself spoke English).
  assert.match(tprun(CLI, ['build', '--model', MODEL], german).stderr, /Fehlendes Argument: out/);
});

test("a command's bundle is not run once a module it was made from changed: the ES modules build, and TPRUN_DEBUG says why", (t) => {
  const dir = copyDist();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dist = join(dir, 'dist');
  const edited = join(dist, 'commands/cli-run.js');
  writeFileSync(edited, `${readFileSync(edited, 'utf8')}// edited\n`);
  utimesSync(edited, new Date(0), new Date(0));
  const engine = join(dir, 'engine');
  const r = tprun(join(dist, 'cli.js'), ['build', '--model', MODEL, '--tp', '1', '--out', engine, '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').filter((l) => l.includes('not used')),
    [`tprun: ${join(dist, 'commands/build.bundle.cjs')} not used, its ES modules are: cli-run.js is not the module it was made from (rebuilt without the bundles, or edited)`]);
  assert.ok(statSync(join(engine, 'rank0', 'weights.bin')).size > 0);
});
