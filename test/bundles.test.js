// The world and the launcher run from bundles (dist/rank/world.bundle.cjs, dist/launcher/launch.bundle.cjs;
// src/util/bundle.ts): two ranks meet from them and from the ES modules (TPRUN_BUNDLE=0), CommError is
// one class whichever copy of the world's modules threw it, what a bundle leaves to ES modules of their
// own (the trace writer) still loads, and a bundle older than its modules is not run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
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

test('a bundle is not run once a module it was made from changed or is newer (npx tsc alone): the ES modules are', async () => {
  const { loadBundle } = await import('../dist/util/bundle.js');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bundle-'));
  try {
    const mod = join(dir, 'mod.js');
    const file = join(dir, 'b.cjs');
    writeFileSync(mod, 'export const v = 42;\n');
    writeFileSync(file, 'module.exports = { v: 42 };\n');
    writeFileSync(`${file}.inputs.json`, JSON.stringify({ inputs: [['mod.js', statSync(mod).size]] }));
    const past = new Date(Date.now() - 60_000);
    utimesSync(mod, past, past);
    assert.equal(loadBundle(file)?.v, 42);
    // Rebuilt after the bundle was made.
    utimesSync(mod, new Date(), new Date(Date.now() + 60_000));
    assert.equal(loadBundle(file), undefined);
    // Changed, whatever its time says.
    writeFileSync(mod, 'export const v = 4321;\n');
    utimesSync(mod, past, past);
    assert.equal(loadBundle(file), undefined);
    // No list of what it was made from: not trusted either.
    rmSync(`${file}.inputs.json`);
    assert.equal(loadBundle(file), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
