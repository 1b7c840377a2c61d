// Shared by the pipeline-parallel tests: the reference checks every engine layout must pass.
import assert from 'node:assert/strict';
import { REF, relL2, relDiff, tprun, jsonLines } from './engine.js';

/** Four prompts, 24 greedy tokens each: ids, last-prompt logits (≤ 1e-4 relative) and tokens as transformers. */
export async function checkGreedy(engine, extra = []) {
  const args = ['generate', '--engine', engine, '--max-new-tokens', '24', '--ignore-eos', '--json', '--logits', ...extra];
  for (const p of REF.prompts) args.push('--prompt', p.text);
  const r = await tprun(args);
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  assert.equal(out.length, REF.prompts.length);
  REF.prompts.forEach((p, b) => {
    assert.deepEqual(out[b].prompt_ids, p.input_ids);
    const err = relL2(out[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 1e-4, `prompt ${b}: relative L2 error ${err}`);
    assert.deepEqual(out[b].new_ids, p.greedy_new_ids, `prompt ${b}`);
    assert.equal(out[b].text, p.greedy_text);
  });
  assert.deepEqual(r.left, []);
}

/** Held-out perplexity within 0.5% of transformers'. */
export async function checkPerplexity(engine) {
  const r = await tprun(['perplexity', '--engine', engine, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.equal(res.tokens, 8192);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.005, `ppl ${res.ppl}`);
}
