// Issue #11 item 5: onnxruntime-node's usage telemetry is off by default for CLI and library users: a
// real run leaves no $TMPDIR/mat-debug-<pid>.log, no $TMPDIR/.ses and no ~/.cache/Microsoft, and every
// module loads onnxruntime-node through src/engine/ort.ts (which switches it off first).
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from '../helpers/procs.js';
import { generateCheckpoint } from 'tprun';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIST = path.join(ROOT, 'dist');
const BROWN = path.join(ROOT, 'models/brown-llama-a');

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tprun-telemetry-'));
test.after(() => fs.rmSync(work, { recursive: true, force: true }));

/** A fresh TMPDIR and HOME, and the environment without any telemetry setting of the caller's. */
function sandbox(name) {
  const tmp = path.join(work, name, 'tmp');
  const home = path.join(work, name, 'home');
  fs.mkdirSync(tmp, { recursive: true });
  fs.mkdirSync(home, { recursive: true });
  /** @type {NodeJS.ProcessEnv} */
  const env = { ...process.env, TMPDIR: tmp, HOME: home, TPRUN_QUIET: '1' };
  delete env.ORT_DISABLE_TELEMETRY;
  delete env.XDG_CACHE_HOME;
  return { tmp, home, env };
}

function litter({ tmp, home }) {
  const found = fs.readdirSync(tmp).filter((n) => n.startsWith('mat-debug-') || n === '.ses').map((n) => path.join(tmp, n));
  if (fs.existsSync(path.join(home, '.cache', 'Microsoft'))) found.push(path.join(home, '.cache', 'Microsoft'));
  return found;
}

// One layer of random weights with the Brown tokenizer (same vocabulary): a cheap real engine.
const MODEL = path.join(work, 'model');
const ENGINE = path.join(work, 'engine');
test('setup: a 2-rank engine', () => {
  generateCheckpoint({ preset: 'brown', layers: 1, out: MODEL, seed: 5 });
  const r = spawnSync(process.execPath, [CLI, 'build', '--model', MODEL, '--tp', '2', '--tokenizer', BROWN, '--max-seq-len', '64', '--max-input-len', '32', '--out', ENGINE],
    { encoding: 'utf8', timeout: 300000, env: sandbox('build').env });
  assert.equal(r.status, 0, r.stderr);
});

test('tprun generate (2 ranks) leaves no telemetry files in TMPDIR or HOME', () => {
  const box = sandbox('generate');
  const r = spawnSync(process.execPath, [CLI, 'generate', '--engine', ENGINE, '--prompt', 'The jury said', '--max-new-tokens', '3'],
    { encoding: 'utf8', timeout: 300000, env: box.env });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(litter(box), []);
});

test('a library user (import tprun, run an engine) gets telemetry off too', () => {
  const box = sandbox('library');
  const script = `
    import { Engine, EngineRunner, runDistributed } from ${JSON.stringify(path.join(DIST, 'index.js'))};
    await runDistributed(2, async (world) => {
      const runner = await EngineRunner.load(await Engine.fromDir(${JSON.stringify(ENGINE)}, world.rank), world);
      if (world.rank === 0) console.log('loaded', process.env.ORT_DISABLE_TELEMETRY);
    });
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 300000, env: box.env });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /loaded 1/);
  assert.deepEqual(litter(box), []);
});

test('only src/engine/ort.ts loads onnxruntime-node (so nothing can reach it before telemetry is off)', () => {
  const offenders = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.js') && p !== path.join(DIST, 'engine/ort.js') && /(from\s+|import\s*\(\s*)['"]onnxruntime-node['"]/.test(fs.readFileSync(p, 'utf8'))) offenders.push(path.relative(DIST, p));
    }
  };
  walk(DIST);
  assert.deepEqual(offenders, []);
});

test('a user\'s explicit setting wins (ORT_DISABLE_TELEMETRY is only defaulted)', () => {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(path.join(DIST, 'engine/ort.js'))}); console.log(process.env.ORT_DISABLE_TELEMETRY);`],
    { encoding: 'utf8', env: { ...process.env, ORT_DISABLE_TELEMETRY: 'false' } });
  assert.equal(r.stdout.trim(), 'false');
});
