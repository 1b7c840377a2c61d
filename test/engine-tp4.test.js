// tp = 4 (one KV head per rank, vocab-parallel embedding: one more all-reduce) through the CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, relL2, relDiff, tprun, jsonLines } from './helpers/engine.js';

let dir;
let engine;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-engine-tp4-'));
  engine = join(dir, 'engine');
  const r = await tprun(['build', '--model', MODEL, '--tp', '4', '--parallel-embedding', '--out', engine, '--max-seq-len', '512']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('float32 tp=4: logits and 24 greedy tokens of four batched prompts match transformers', async () => {
  const cfg = JSON.parse(readFileSync(join(engine, 'config.json'), 'utf8'));
  assert.equal(cfg.tp_size, 4);
  assert.equal(cfg.pretrained_config.use_parallel_embedding, true);
  const args = ['generate', '--engine', engine, '--max-new-tokens', '24', '--ignore-eos', '--json', '--logits'];
  for (const p of REF.prompts) args.push('--input-ids', p.input_ids.join(','));
  const r = await tprun(args);
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  REF.prompts.forEach((p, b) => {
    const err = relL2(out[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 1e-4, `prompt ${b}: relative L2 error ${err}`);
    assert.deepEqual(out[b].new_ids, p.greedy_new_ids);
  });
  assert.deepEqual(r.left, []);
});

test('float32 tp=4 held-out perplexity is within 0.5% of transformers', async () => {
  const r = await tprun(['perplexity', '--engine', engine, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.005, `ppl ${res.ppl}`);
});
