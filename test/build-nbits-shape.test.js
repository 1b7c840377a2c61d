// Weight-only builds (int8_wo, and a checkpoint's per-channel W8A16/W4A16) run every linear as
// onnxruntime's MatMulNBits, whose blocks need each rank's input features K to be a multiple of 16. A
// model of hidden 72 (or an intermediate size whose per-rank share is not) was built by ranks that then
// died with exit 1 from the graph builder. Now: one line naming the option and the linear, exit 2, no
// output, before any rank starts. An lm_head that cannot be block-quantized stays float (no error).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tprun } from './helpers/engine.js';
import { writeTinyLlama } from './helpers/tiny-model.js';
import { weightOnlyShapeRefusal } from '../dist/engine/nbits-shape.js';
import { kPerRank } from '../dist/sharding/tllm-layout.js';


test('kPerRank: the row-parallel linears (dense, proj) are cut along K, the others hold it whole', () => {
  const ks = kPerRank({ hidden_size: 96, intermediate_size: 320, num_attention_heads: 4, head_size: 24 }, 4);
  assert.deepEqual(ks.map((x) => [x.linear, x.k, x.perRank, x.rowParallel]), [
    ['attention.qkv', 96, 96, false], ['attention.dense', 96, 24, true],
    ['mlp.fc', 96, 96, false], ['mlp.gate', 96, 96, false], ['mlp.proj', 320, 80, true],
  ]);
});

test('which per-rank K MatMulNBits cannot block (injected shapes)', () => {
  /** @type {(H: number, I: number, tp: number, algo?: string | null) => any} */
  const c = (H, I, tp, algo = 'W8A16') => ({ hidden_size: H, intermediate_size: I, num_attention_heads: 2, head_size: 32, mapping: { tp_size: tp }, quantization: { quant_algo: algo } });
  assert.match(String(weightOnlyShapeRefusal(c(72, 128, 1))), /^attention\.qkv has 72 input features per rank at tp=1, not a multiple of 16/);
  assert.match(String(weightOnlyShapeRefusal(c(64, 136, 1))), /^mlp\.proj has 136 input features per rank at tp=1, not a multiple of 16/);
  assert.match(String(weightOnlyShapeRefusal(c(64, 136, 2))), /^mlp\.proj has 68 input features per rank at tp=2, not a multiple of 16 \(onnxruntime's MatMulNBits blocks\)$/);
  assert.match(String(weightOnlyShapeRefusal(c(64, 160, 4))), /^mlp\.proj has 40 input features per rank at tp=4.*a --tp whose share is a multiple of 16/);
  assert.match(String(weightOnlyShapeRefusal(c(72, 128, 1, 'W4A16'))), /^attention\.qkv has 72/);
  assert.equal(weightOnlyShapeRefusal(c(64, 128, 2)), undefined);
  assert.equal(weightOnlyShapeRefusal(c(72, 136, 1, null)), undefined, 'a float model');
  assert.equal(weightOnlyShapeRefusal(c(72, 136, 1, 'W4A16_AWQ')), undefined, 'group-wise int4: --group-size is checked (checkGroups)');
});

test('int8_wo of a model of hidden 72 is refused in one line before any rank starts; the float build keeps a float lm_head', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-h72-'));
  try {
    writeTinyLlama(dir, { H: 72, I: 128 });
    const out = join(dir, 'engine');
    for (const tp of ['1', '2']) {
      const r = await tprun(['build', '--model', dir, '--quant', 'int8_wo', '--tp', tp, '--out', out]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr.trim(), new RegExp(`^tprun: --quant int8_wo: attention\\.qkv has 72 input features per rank at tp=${tp}, not a multiple of 16 \\(onnxruntime's MatMulNBits blocks\\); build --model .* without --quant$`));
      assert.doesNotMatch(r.stderr, /\[rank/, 'no rank started');
      assert.ok(!existsSync(out), 'no partial output');
    }
    // A checkpoint quantized beforehand meets the same refusal, naming its config.json (exit 2, not 1).
    const ck = join(dir, 'ckpt');
    const cv = await tprun(['convert', '--model', dir, '--quant', 'int8_wo', '--out', ck]);
    assert.equal(cv.code, 0, cv.stderr);
    const b = await tprun(['build', '--checkpoint', ck, '--out', out]);
    assert.equal(b.code, 2, b.stderr);
    assert.match(b.stderr, /quant_algo W8A16: attention\.qkv has 72 input features per rank at tp=1, not a multiple of 16 \(onnxruntime's MatMulNBits blocks\); build from the unquantized model/);
    assert.doesNotMatch(b.stderr, /K=72 is not a multiple of 16/, 'not the graph builder\'s old error');
    assert.ok(!existsSync(out), 'no partial output');
    // An lm_head of K=72 asked to be int8 stays float: built, not refused.
    const f = await tprun(['build', '--model', dir, '--lm-head-quant', 'int8', '--out', out]);
    assert.equal(f.code, 0, f.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('int8_wo whose intermediate size per rank is not a multiple of 16 is refused naming mlp.proj', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-i136-'));
  try {
    writeTinyLlama(dir, { H: 64, I: 136 });
    const out = join(dir, 'engine');
    const r = await tprun(['build', '--model', dir, '--quant', 'int8_wo', '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim(), /^tprun: --quant int8_wo: mlp\.proj has 136 input features per rank at tp=1, not a multiple of 16 \(onnxruntime's MatMulNBits blocks\); build --model .* without --quant$/);
    assert.ok(!existsSync(out), 'no partial output');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
