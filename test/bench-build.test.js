// Smoke test of `tprun bench build` on the embedded model: one JSON result with the cp and copy-loop anchors, the
// build and convert timings and ratios, and the build's phases (no timing thresholds: speed is measured
// by the benchmark, never asserted here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { MODEL, tprun } from './helpers/engine.js';

const koffi = (() => { try { createRequire(import.meta.url)('koffi'); return true; } catch { return false; } })();

test('bench build on the embedded model prints its JSON result', async () => {
  const r = await tprun(['bench', 'build', '--model', MODEL, '--reps', '1', '--convert-tp', '2', '--json'], { timeoutMs: 300000 });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const res = lines.find((l) => l.bench === 'build' && l.cp_seconds !== undefined);
  assert.ok(res, r.stdout);
  assert.ok(res.model_bytes > 0);
  for (const k of ['build', 'convert']) {
    assert.ok(res[k].seconds > 0 && Number.isFinite(res[k].ratio), `${k}: ${JSON.stringify(res[k])}`);
  }
  assert.ok(res.build.engine_bytes > 0 && res.convert.checkpoint_bytes > 0);
  // The user-space copy floor and the conversion ranks' own time, as anchors beside cp.
  assert.ok(res.copy_loop.seconds > 0 && Number.isFinite(res.copy_loop.ratio));
  // The mapped-source floor (one copy from user space) where koffi is installed.
  if (koffi) assert.ok(res.map_loop.seconds > 0 && Number.isFinite(res.map_loop.ratio), JSON.stringify(res.map_loop));
  assert.ok(Number.isFinite(res.build.ratio_to_copy_loop) && Number.isFinite(res.convert.ratio_to_copy_loop));
  assert.ok(res.convert.rank_seconds > 0 && res.convert.rank_seconds <= res.convert.seconds, JSON.stringify(res.convert));
  assert.equal(res.build.dtype, 'float16');
  for (const p of ['load', 'build', 'save']) assert.ok(res.build.phases_seconds[p] >= 0, `phase ${p}`);
  // Which weight writer ran and on how many threads, and the threads of the conversion (the lead reads
  // these beside the ratios on machines of different core counts).
  assert.ok(res.cores >= 1);
  assert.ok(['parallel', 'streaming'].includes(res.build.writer), JSON.stringify(res.build));
  assert.ok(Number.isInteger(res.build.threads) && res.build.threads >= 1, JSON.stringify(res.build));
  assert.ok(Number.isInteger(res.convert.threads) && res.convert.threads >= 1, JSON.stringify(res.convert));
});
