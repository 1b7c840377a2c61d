// While the parallel weight writer's workers convert and write weights.bin, the main thread encodes and
// writes the segment graphs (engine.ts writeRank; WeightFile.write's onStarted): the trace of a build
// large enough for the parallel writer shows the segments' span inside the weight file's, so a build that
// silently goes back to encoding first fails here; the engine is the one the streaming writer makes
// (segment graphs, weights and manifest byte for byte).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tprun } from './helpers/engine.js';

test('the segment graphs are encoded and written while the weight workers write (trace), same engine as the streaming writer', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-overlap-'));
  try {
    // One layer of the 1.1B shape: ~0.35 GB of bf16, above the parallel writer's 64 MiB floor (weight-file.ts).
    const model = join(dir, 'model');
    const g = await tprun(['gen-checkpoint', '--preset', 'tinyllama-1.1b', '--layers', '1', '--out', model]);
    assert.equal(g.code, 0, g.stderr);
    const trace = join(dir, 'trace.json');
    const args = (out) => ['build', '--model', model, '--tp', '1', '--dtype', 'float16', '--out', join(dir, out), '--quiet'];
    // Two weight workers whatever this machine's cores (fewer than 2 take the streaming writer).
    const r = await tprun([...args('parallel'), '--trace', trace], { env: { TPRUN_BUILD_THREADS: '2' } });
    assert.equal(r.code, 0, r.stderr);
    const spans = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e) => e.ph === 'X');
    const w = spans.find((e) => e.name === 'weights.write');
    const s = spans.find((e) => e.name === 'segments.write');
    assert.equal(w.args.writer, 'parallel');
    assert.ok(s, 'no segments.write span');
    assert.ok(s.ts >= w.ts && s.ts < w.ts + w.dur, `segments written at ${s.ts}, outside the weight file's write (${w.ts} + ${w.dur})`);
    const st = await tprun(args('streaming'), { env: { TPRUN_BUILD_WRITER: 'streaming' } });
    assert.equal(st.code, 0, st.stderr);
    for (const f of ['seg0.onnx', 'weights.bin', 'manifest.json']) {
      assert.ok(readFileSync(join(dir, 'parallel', 'rank0', f)).equals(readFileSync(join(dir, 'streaming', 'rank0', f))), `${f} differs`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
