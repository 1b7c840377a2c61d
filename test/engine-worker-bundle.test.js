// The parallel weight writer's workers run from their CommonJS bundle (dist/engine/weight-worker.bundle.cjs,
// scripts/bundle.mjs; weight-jobs.ts workerFile) where the build made it, and from the ES modules with
// TPRUN_BUNDLE=0: the same weight file either way, and each reply says which code ran, so a build that
// silently loads the modules again (a missing or stale bundle) fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { engineWeight, engineWeightTransposed } from '../dist/engine/weight-convert.js';
import { WeightFile } from '../dist/engine/weight-file.js';
import { openLazyShard } from '../dist/engine/lazy-shard.js';
import { jobStats, workerFile } from '../dist/engine/weight-jobs.js';

const MODEL = fileURLToPath(new URL('../models/brown-llama-a', import.meta.url));
const BUNDLE = fileURLToPath(new URL('../dist/engine/weight-worker.bundle.cjs', import.meta.url));
/** Whether this tree can make bundles (esbuild, a devDependency): then `npm run build` made this one. */
const esbuild = (() => { try { createRequire(import.meta.url).resolve('esbuild'); return true; } catch { return false; } })();

async function write(file) {
  const { shard, close } = openLazyShard({ dir: MODEL, meta: false, load: { mapping: { tp_size: 2, world_size: 2, pp_size: 1 }, rank: 1 } });
  try {
    const wf = new WeightFile('weights.bin');
    for (const [n, t] of shard.weights) wf.add(n, t.shape.length === 2 && !n.includes('embedding') ? engineWeightTransposed(t, 'float16', n) : engineWeight(t, 'float16', n));
    // Two workers whatever the size (the small model is under the parallel writer's floor).
    const crc = await wf.write(file, { threads: threadsOf(file), parallelMin: 0 });
    return { crc, bytes: readFileSync(file) };
  } finally {
    close();
  }
}
const threadsOf = (file) => (file.endsWith('serial.bin') ? 0 : 2);

test('weight workers run from their bundle (TPRUN_BUNDLE=0: the ES modules), writing the streaming writer\'s file', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wbundle-'));
  const saved = process.env.TPRUN_BUNDLE;
  t.after(() => {
    if (saved === undefined) delete process.env.TPRUN_BUNDLE;
    else process.env.TPRUN_BUNDLE = saved;
    rmSync(dir, { recursive: true, force: true });
  });
  const serial = await write(join(dir, 'serial.bin'));
  delete process.env.TPRUN_BUNDLE;
  if (esbuild) {
    assert.ok(existsSync(BUNDLE), `${BUNDLE} missing: npm run build makes it`);
    assert.equal(fileURLToPath(workerFile()), BUNDLE, 'the bundle is current (npx tsc alone leaves it stale: npm run build)');
  }
  const b0 = { ...jobStats };
  const bundled = await write(join(dir, 'bundle.bin'));
  assert.ok(jobStats.jobs > b0.jobs, 'the workers wrote');
  if (esbuild) assert.equal(jobStats.bundledJobs - b0.bundledJobs, jobStats.jobs - b0.jobs, 'every job ran in a worker started from the bundle');
  process.env.TPRUN_BUNDLE = '0';
  assert.ok(fileURLToPath(workerFile()).endsWith('weight-worker.js'));
  const m0 = { ...jobStats };
  const modules = await write(join(dir, 'modules.bin'));
  assert.ok(jobStats.jobs > m0.jobs, 'the workers wrote');
  assert.equal(jobStats.bundledJobs, m0.bundledJobs, 'no job ran from the bundle');
  for (const got of [bundled, modules]) {
    const what = got === bundled ? 'bundle' : 'modules';
    assert.equal(got.crc, serial.crc, what);
    assert.ok(got.bytes.equals(serial.bytes), `${what}: bytes differ`);
  }
});
