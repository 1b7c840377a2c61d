// build_config.lm_head_block_size records the block the quantized lm_head was built with. The block is the
// largest power of two ≤ the one asked for that divides K (the hidden size): a hidden size of 96 takes 32.
// The config said 256 (the CPU default) whatever was used; and where no block fits K (not a multiple of
// 16) the lm_head stays float, so the config says lm_head_quant 'none'. The graph's lm_head MatMulNBits
// node carries the recorded block (its block_size attribute): the config and the graph agree.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tprun } from './helpers/engine.js';
import { writeTinyLlama } from './helpers/tiny-model.js';
import { engineGraph } from '../dist/engine/engine-weights.js';

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-lmblock-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

/** A one-layer LLaMA of hidden size H (heads of 16) in Hugging Face's layout, small deterministic weights. */
/** @param {string} name @param {number} H */
function tinyModel(name, H) {
  const d = join(dir, name);
  mkdirSync(d);
  writeTinyLlama(d, { H, I: 128, nh: 4, nkv: 2, hd: 16 });
  return d;
}

/** @param {string} model @param {string[]} args */
async function builtConfig(model, args) {
  const out = join(dir, `engine-${Math.random().toString(36).slice(2)}`);
  const r = await tprun(['build', '--model', model, '--out', out, ...args], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.stderr);
  const bc = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).build_config;
  // The lm_head's node in rank 0's segments, as --kernels wgsl reads them: MatMulNBits when quantized.
  const segs = readdirSync(join(out, 'rank0')).filter((f) => /^seg\d+\.onnx$/.test(f)).map((f) => join(out, 'rank0', f));
  const lmHead = engineGraph(segs).nodes.filter((n) => n.inputs[1] === 'lm_head.weight');
  assert.equal(lmHead.length, 1, `one lm_head node: ${JSON.stringify(lmHead)}`);
  if (bc.lm_head_quant === 'none') assert.notEqual(lmHead[0].op, 'MatMulNBits');
  else {
    assert.equal(lmHead[0].op, 'MatMulNBits');
    assert.equal(lmHead[0].attrs.block_size, bc.lm_head_block_size, 'the graph\'s block is the one recorded');
  }
  return bc;
}

test('a quantized lm_head whose K 256 does not divide records the smaller block it was built with', { timeout: 600_000 }, async () => {
  const m96 = tinyModel('h96', 96);
  const c = await builtConfig(m96, ['--quant', 'int8_wo', '--lm-head-block-size', '256']);
  assert.equal(c.lm_head_quant, 'int8');
  assert.equal(c.lm_head_block_size, 32);
  // A block that divides K is kept as asked.
  assert.equal((await builtConfig(m96, ['--quant', 'int8_wo', '--lm-head-block-size', '16'])).lm_head_block_size, 16);
  // No block fits K = 72 (a float model, its lm_head asked quantized): it stays float, and the config says so.
  const c72 = await builtConfig(tinyModel('h72', 72), ['--lm-head-quant', 'int8']);
  assert.equal(c72.lm_head_quant, 'none');
});
