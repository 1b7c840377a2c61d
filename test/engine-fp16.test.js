// float16 engines (weights, activations and KV cache in half precision; logits and all-reduces in float32).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, relL2, relDiff, tprun, jsonLines } from './helpers/engine.js';

let dir;
let engine;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-engine-fp16-'));
  engine = join(dir, 'engine');
  const r = await tprun(['build', '--model', MODEL, '--tp', '2', '--dtype', 'float16', '--out', engine, '--max-seq-len', '512']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('float16 tp=2: last-prompt logits within 5e-3 of transformers\' float32', async () => {
  const args = ['generate', '--engine', engine, '--max-new-tokens', '8', '--json', '--logits'];
  for (const p of REF.prompts) args.push('--input-ids', p.input_ids.join(','));
  const r = await tprun(args);
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  REF.prompts.forEach((p, b) => {
    const err = relL2(out[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 5e-3, `prompt ${b}: relative L2 error ${err}`);
    assert.ok(err > 1e-6, 'a float16 engine cannot be bit-exact with float32: is it really half precision?');
  });
  // Half the bytes of the float32 weights (4096x256 embedding + lm_head half + layers), less than 9 MB per rank.
  assert.ok(statSync(join(engine, 'rank0', 'weights.bin')).size < 9e6);
});

test('float16 tp=2 held-out perplexity is within 1% of transformers', async () => {
  const r = await tprun(['perplexity', '--engine', engine, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.01, `ppl ${res.ppl}`);
});
