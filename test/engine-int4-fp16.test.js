// int4 weight-only in a float16 engine: MatMulNBits runs on float16 activations and scales, with no Cast
// pair around every linear (on WebGPU those Casts were nearly half of a decode step's nodes: docs/gpu.md),
// and gives what the float32 int4 engine gives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MODEL = new URL('../models/brown-llama-a', import.meta.url).pathname;
const REF = JSON.parse(readFileSync(new URL('../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));

function tprun(args) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** op_type "Cast" as a NodeProto field (field 4, length 4) in the serialized graph. */
const castNodes = (onnx) => onnx.toString('latin1').split('\x22\x04Cast').length - 1;

test('float16 int4_wo engine: no Cast around MatMulNBits; logits and greedy tokens as the float32 int4 engine', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'int4-fp16-'));
  try {
    const out = {};
    for (const dtype of ['float16', 'float32']) {
      const e = join(dir, dtype);
      tprun(['build', '--model', MODEL, '--quant', 'int4_wo', '--dtype', dtype, '--max-seq-len', '128', '--max-input-len', '64', '--out', e, '-q']);
      const onnx = readFileSync(join(e, 'rank0', 'seg0.onnx'));
      if (dtype === 'float16') assert.equal(castNodes(onnx), 1, 'only the logits cast to float32');
      out[dtype] = REF.prompts.slice(0, 2).map((p) => JSON.parse(tprun(['generate', '--engine', e, '--input-ids', p.input_ids.join(','),
        '--max-new-tokens', '12', '--ignore-eos', '--json', '--logits', '-q']).split('\n').find((l) => l.startsWith('{'))));
    }
    for (let i = 0; i < 2; i++) {
      const a = out.float16[i].last_prompt_logits;
      const b = out.float32[i].last_prompt_logits;
      const rel = Math.sqrt(a.reduce((s, x, k) => s + (x - b[k]) ** 2, 0) / b.reduce((s, x) => s + x * x, 0));
      assert.ok(rel < 5e-3, `prompt ${i}: logits rel L2 ${rel}`);
      assert.deepEqual(out.float16[i].new_ids, out.float32[i].new_ids);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
