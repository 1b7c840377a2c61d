// The hand-written ONNX encoder and the weight file, checked by onnxruntime itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from '../dist/engine/ort.js'; // telemetry off, as tprun itself loads it
import { Graph, MS } from '../dist/engine/graph.js';
import { WeightFile, WEIGHT_ALIGN } from '../dist/engine/weight-file.js';
import { toFloat32 } from 'tprun';
import { floatToHalf, f16BitsToFloat as halfToFloat } from '../dist/core/half.js';
import { fromFloat32 } from '../dist/engine/dtype.js';

test('a graph with external weights, attributes and a contrib op runs in onnxruntime', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-onnx-'));
  try {
    const wf = new WeightFile('weights.bin');
    const g = new Graph('t', 'float32', wf);
    const x = g.input('x', 'float32', ['batch', 3]);
    const W = Float32Array.of(1, 2, 3, 4, 5, 6);
    const w = g.weight('w', { dtype: 'float32', shape: [3, 2], data: new Uint8Array(W.buffer) });
    const s = g.weight('s', { dtype: 'float32', shape: [2], data: new Uint8Array(Float32Array.of(1, 2).buffer) });
    const y = g.op('MatMul', [x, w]);
    const n = g.op('SimplifiedLayerNormalization', [y, s], { epsilon: { float: 1e-6 }, axis: -1 });
    const sk = g.fresh('sum');
    g.node('SkipSimplifiedLayerNormalization', [y, y, s], [g.fresh('o'), '', '', sk], { epsilon: { float: 1e-6 } }, MS);
    g.node('Identity', [n], ['norm']);
    g.node('Identity', [sk], ['skip_sum']);
    g.output('norm', 'float32', ['batch', 2]);
    g.output('skip_sum', 'float32', ['batch', 2]);
    // Two weights large enough for the weight file, each at its own 64 KiB-aligned offset.
    const big = Float32Array.from({ length: 1100 }, (_, i) => i);
    const b1 = g.weight('big1', { dtype: 'float32', shape: [1100], data: new Uint8Array(big.buffer) });
    const b2 = g.weight('big2', { dtype: 'float32', shape: [1100], data: new Uint8Array(big.map((x) => 2 * x).buffer) });
    g.node('Add', [b1, b2], ['bigsum']);
    g.output('bigsum', 'float32', [1100]);
    const byName = Object.fromEntries(g.initializers.map((i) => [i.name, i]));
    assert.ok(byName.w.raw && !byName.w.external, 'tiny weights stay inline');
    assert.deepEqual([byName.big1.external?.offset, byName.big2.external?.offset], [0, WEIGHT_ALIGN]);
    writeFileSync(join(dir, 'g.onnx'), g.encode());
    await wf.write(join(dir, 'weights.bin'));
    const sess = await ort.InferenceSession.create(join(dir, 'g.onnx'));
    const out = await sess.run({ x: new ort.Tensor('float32', Float32Array.of(1, 0, 1, 0, 1, 0), [2, 3]) });
    // row 0: [1,0,1]·W = [6, 8]; rms = sqrt(50) → [6, 16] / sqrt(50)
    const r = Math.sqrt(50);
    const got = Array.from(/** @type {Float32Array} */ (out.norm.data));
    [6 / r, 16 / r].forEach((v, i) => assert.ok(Math.abs(got[i] - v) < 1e-5, `${got[i]} vs ${v}`));
    assert.deepEqual(Array.from(/** @type {Float32Array} */ (out.skip_sum.data).slice(0, 2)), [12, 16]);
    assert.deepEqual(Array.from(/** @type {Float32Array} */ (out.bigsum.data).slice(1097)), [3291, 3294, 3297]);
    await sess.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('half-precision conversion rounds to nearest even and keeps specials', () => {
  assert.equal(floatToHalf(1), 0x3c00);
  assert.equal(floatToHalf(-2), 0xc000);
  assert.equal(floatToHalf(65504), 0x7bff);
  assert.equal(floatToHalf(1e6), 0x7c00);
  assert.equal(floatToHalf(2 ** -24), 0x0001);
  assert.equal(floatToHalf(1 + 2 ** -11), 0x3c00); // tie → even
  assert.equal(floatToHalf(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
  assert.ok(Number.isNaN(halfToFloat(floatToHalf(NaN))));
  const xs = Float32Array.of(0.1, -3.5, 1024.5, 6e-5);
  const back = toFloat32(fromFloat32(xs, [4], 'float16'));
  xs.forEach((x, i) => assert.ok(Math.abs(back[i] - x) <= Math.abs(x) * 2 ** -11, `${x} → ${back[i]}`));
  // bf16 → f32 is exact
  /** @type {import('tprun').Tensor} */
  const bf = { dtype: 'bfloat16', shape: [1], data: new Uint8Array(Uint16Array.of(0x3fc0).buffer) };
  assert.equal(toFloat32(bf)[0], 1.5);
});
