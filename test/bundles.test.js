// The world and the launcher run from bundles with a V8 code cache (dist/rank/world.bundle.cjs,
// dist/launcher/launch.bundle.cjs; src/util/code-cache.ts): the cache is written once and then taken as
// it is, only from a directory no one else can write, TPRUN_BUNDLE=0 runs the ES modules instead,
// CommError is one class whichever copy of the world's modules threw it, and what a bundle leaves to ES
// modules of their own (the trace writer) still loads from a cached bundle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
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
const w = await initWorld({ timeoutMs: 60000 });
let err;
try { await w.recv(w.size + 5); } catch (e) { err = e; }
if (!(err instanceof CommError) || !(err instanceof InboxCommError) || CommError !== InboxCommError) throw new Error('not one CommError: ' + err);
if (err.constructor.name !== 'CommError' || !String(err).startsWith('CommError: ')) throw new Error('CommError misnamed: ' + err.constructor.name + ' / ' + err);
await w.barrier();
await w.close();
process.stdout.write('ok ' + w.rank + '\\n');
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
const v8Files = (d) => { try { return readdirSync(d).filter((f) => f.endsWith('.v8')); } catch { return []; } };

test('a world of one writes the code cache once, then takes it as it is', () => {
  const { dir, app } = setup();
  try {
    const cache = join(dir, 'cache');
    const first = run([app], { TPRUN_CODE_CACHE: cache });
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout, 'ok 0\n');
    const files = v8Files(cache);
    assert.equal(files.length, 1, `cache files: ${files}`);
    assert.match(files[0], new RegExp(`^world\\.bundle\\.cjs-[0-9a-z]+-${process.version.replace(/\./g, '\\.')}-${process.arch}-[0-9a-z.]+\\.v8$`));
    assert.equal(statSync(cache).mode & 0o777, 0o700);
    const ino = statSync(join(cache, files[0])).ino;
    // V8 accepted it: nothing was written again (a rejected cache is replaced by a fresh file).
    const second = run([app], { TPRUN_CODE_CACHE: cache });
    assert.equal(second.status, 0, second.stderr);
    assert.deepEqual(v8Files(cache), files);
    assert.equal(statSync(join(cache, files[0])).ino, ino);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no cache in a directory others can write, none with TPRUN_CODE_CACHE=off, no bundle with TPRUN_BUNDLE=0', () => {
  const { dir, app } = setup();
  try {
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    for (const [env, cache] of /** @type {const} */ ([[{ TPRUN_CODE_CACHE: open }, open], [{ TPRUN_CODE_CACHE: 'off' }, undefined], [{ TPRUN_CODE_CACHE: join(dir, 'c0'), TPRUN_BUNDLE: '0' }, join(dir, 'c0')]])) {
      const r = run([app], env);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'ok 0\n');
      if (cache) assert.deepEqual(v8Files(cache), [], JSON.stringify(env));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('two ranks meet from the bundle and from the ES modules (TPRUN_BUNDLE=0)', () => {
  const { dir, app } = setup();
  try {
    for (const bundle of ['1', '0']) {
      const r = run([CLI, '-n', '2', '--gpus', 'none', '--quiet', '-x', 'TPRUN_BUNDLE', '-x', 'TPRUN_CODE_CACHE', '--', process.execPath, app],
        { TPRUN_BUNDLE: bundle, TPRUN_CODE_CACHE: join(dir, `cache${bundle}`), CUDA_VISIBLE_DEVICES: undefined });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n').sort(), ['ok 0', 'ok 1']);
      // Only bundles have caches: the launcher's and the world's, which one rank per machine writes.
      assert.deepEqual(v8Files(join(dir, `cache${bundle}`)).map((f) => f.replace(/-.*/, '')).sort(), bundle === '1' ? ['launch.bundle.cjs', 'world.bundle.cjs'] : []);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the launcher from its cached bundle still loads what it left outside (--trace), and says nothing', () => {
  const { dir } = setup();
  try {
    const cache = join(dir, 'cache');
    let ino;
    for (const round of [1, 2]) {
      const trace = join(dir, `trace${round}.json`);
      const r = run([CLI, '-n', '2', '--gpus', 'none', '--quiet', '--trace', trace, '--', process.execPath, '-e', '0'], { TPRUN_CODE_CACHE: cache, CUDA_VISIBLE_DEVICES: undefined });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.ok(statSync(trace).size > 0, 'trace written');
      const files = v8Files(cache).filter((f) => f.startsWith('launch.bundle.cjs-'));
      assert.equal(files.length, 1, `cache files: ${v8Files(cache)}`);
      const now = statSync(join(cache, files[0])).ino;
      if (round === 2) assert.equal(now, ino, 'the second launch took the cache as it was');
      ino = now;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a bundle is not run once a module it was made from changed or is newer (npx tsc alone): the ES modules are', async () => {
  const { loadBundle } = await import('../dist/util/code-cache.js');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-'));
  try {
    const mod = join(dir, 'mod.js');
    const file = join(dir, 'b.cjs');
    writeFileSync(mod, 'export const v = 42;\n');
    writeFileSync(file, 'module.exports = { v: 42 };\n');
    writeFileSync(`${file}.inputs.json`, JSON.stringify({ inputs: [['mod.js', statSync(mod).size]] }));
    const past = new Date(Date.now() - 60_000);
    utimesSync(mod, past, past);
    const env = { TPRUN_CODE_CACHE: 'off' };
    assert.equal(loadBundle(file, env)?.exports.v, 42);
    // Rebuilt after the bundle was made.
    utimesSync(mod, new Date(), new Date(Date.now() + 60_000));
    assert.equal(loadBundle(file, env), undefined);
    // Changed, whatever its time says.
    writeFileSync(mod, 'export const v = 4321;\n');
    utimesSync(mod, past, past);
    assert.equal(loadBundle(file, env), undefined);
    // No list of what it was made from: not trusted either.
    rmSync(`${file}.inputs.json`);
    assert.equal(loadBundle(file, env), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
