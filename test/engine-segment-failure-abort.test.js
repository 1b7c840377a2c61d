// A segment graph that fails to encode or write while the parallel weight writer's workers write
// weights.bin (engine.ts writeRank; WeightFile.write's onStarted) used to be reported only after every
// weight job was done (the whole file, for nothing: it is discarded). Now the write is given up at once:
// the workers are terminated (weight-jobs.ts close(now)), fewer jobs finish than the whole file has, the
// temporary directory is removed, no worker is left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tprun } from './helpers/engine.js';
import { loadShardForBuild } from '../dist/engine/load-shard.js';
import { build } from '../dist/engine/engine.js';
import { jobStats } from '../dist/engine/weight-jobs.js';

test('an injected segment failure stops the parallel weight writer at once: temp dir removed, no worker left', { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-segfail-'));
  const threads = process.env.TPRUN_BUILD_THREADS;
  // Two weight workers whatever this machine's cores (fewer than 2 take the streaming writer).
  process.env.TPRUN_BUILD_THREADS = '2';
  try {
    // One layer of the 1.1B shape: above the parallel writer's 64 MiB floor (weight-file.ts), several jobs.
    const model = join(dir, 'model');
    const g = await tprun(['gen-checkpoint', '--preset', 'tinyllama-1.1b', '--layers', '1', '--out', model]);
    assert.equal(g.code, 0, g.stderr);
    const shard = await loadShardForBuild({ model, tp: 1, pp: 1, world: /** @type {any} */ ({ rank: 0, size: 1, localRank: 0 }) });
    const engine = await build(shard, { dtype: 'float16', device: 'cpu' });
    // The whole file's jobs, from a write that succeeds.
    const j0 = jobStats.jobs;
    await engine.save(join(dir, 'good'));
    const all = jobStats.jobs - j0;
    assert.ok(all >= 4, `${all} jobs: too few for the test to tell`);
    assert.equal(jobStats.live, 0, 'the good write left no worker');

    const graphs = /** @type {any} */ (engine).built.graphs;
    graphs[0] = () => { throw new Error('encode failed (injected)'); };
    const j1 = jobStats.jobs;
    const t1 = jobStats.terminated;
    const out = join(dir, 'bad');
    await assert.rejects(engine.save(out), /encode failed \(injected\)/);
    const done = jobStats.jobs - j1;
    console.log(`jobs: ${all} in the whole file, ${done} after the injected failure`);
    assert.ok(done < all, `${done} of ${all} jobs ran after the segment failed: the writer was not stopped`);
    assert.equal(jobStats.terminated - t1, 2, 'both workers terminated, not waited for');
    assert.equal(jobStats.live, 0, 'no worker left');
    assert.ok(!existsSync(out), 'no engine');
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('partial')), [], 'temp dir removed');
  } finally {
    if (threads === undefined) delete process.env.TPRUN_BUILD_THREADS;
    else process.env.TPRUN_BUILD_THREADS = threads;
    rmSync(dir, { recursive: true, force: true });
  }
});
