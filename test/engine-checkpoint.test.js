// The other two ways into an engine: a TensorRT-LLM checkpoint (tprun convert, then build --checkpoint)
// and Meta's format (build --model on consolidated.NN.pth), both checked against transformers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODEL, REF, relL2, tprun, jsonLines } from './helpers/engine.js';

const META = fileURLToPath(new URL('../models/brown-llama-a-meta', import.meta.url));
let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-engine-ckpt-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

async function checkAgainstReference(engine) {
  const args = ['generate', '--engine', engine, '--max-new-tokens', '24', '--ignore-eos', '--json', '--logits'];
  for (const p of REF.prompts.slice(0, 2)) args.push('--prompt', p.text);
  const r = await tprun(args);
  assert.equal(r.code, 0, r.stderr);
  jsonLines(r.stdout).forEach((o, b) => {
    assert.ok(relL2(o.last_prompt_logits, REF.prompts[b].last_logits) < 1e-4);
    assert.deepEqual(o.new_ids, REF.prompts[b].greedy_new_ids);
  });
}

test('tprun convert --tp 2, then build --checkpoint: the engine matches transformers', async () => {
  const ckpt = join(dir, 'ckpt');
  let r = await tprun(['convert', '--model', MODEL, '--tp', '2', '--out', ckpt]);
  assert.equal(r.code, 0, r.stderr);
  const engine = join(dir, 'from-ckpt');
  r = await tprun(['build', '--checkpoint', ckpt, '--tokenizer', MODEL, '--out', engine, '--max-input-len', '128', '--max-seq-len', '256']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(engine, 'rank1', 'manifest.json')));
  await checkAgainstReference(engine);
});

test('build --model on the Meta checkpoint (2-way model-parallel, interleaved rotary) matches transformers', async () => {
  const engine = join(dir, 'from-meta');
  const r = await tprun(['build', '--model', META, '--tp', '1', '--tokenizer', MODEL, '--out', engine, '--max-input-len', '128', '--max-seq-len', '256']);
  assert.equal(r.code, 0, r.stderr);
  await checkAgainstReference(engine);
});
