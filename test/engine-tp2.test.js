// tp = 2 through the CLI: real ranks started by `tprun build` / `generate` / `perplexity` themselves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, relL2, relDiff, tprun, jsonLines } from './helpers/engine.js';

let dir;
let engine;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-engine-tp2-'));
  engine = join(dir, 'engine');
  const r = await tprun(['build', '--model', MODEL, '--tp', '2', '--out', engine, '--max-seq-len', '512']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('float32 tp=2: four prompts (text) give the reference ids, logits and 24 greedy tokens', async () => {
  const args = ['generate', '--engine', engine, '--max-new-tokens', '24', '--ignore-eos', '--json', '--logits'];
  for (const p of REF.prompts) args.push('--prompt', p.text);
  const r = await tprun(args);
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  assert.equal(out.length, 4);
  REF.prompts.forEach((p, b) => {
    assert.deepEqual(out[b].prompt_ids, p.input_ids);
    const err = relL2(out[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 1e-4, `prompt ${b}: relative L2 error ${err}`);
    assert.deepEqual(out[b].new_ids, p.greedy_new_ids);
    assert.equal(out[b].text, p.greedy_text);
    for (const k of ['load_ms', 'prefill_ms', 'decode_ms_per_token', 'tokens_per_s']) assert.equal(typeof out[b].timings[k], 'number');
  });
  assert.deepEqual(r.left, []);
});

test('float32 tp=2 held-out perplexity is within 0.5% of transformers', async () => {
  const r = await tprun(['perplexity', '--engine', engine, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.equal(res.tokens, 8192);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.005, `ppl ${res.ppl}`);
});

test('--input-ids and --prompt agree; a timing summary follows on stderr (stdout is the text alone)', async () => {
  const r = await tprun(['generate', '--engine', engine, '--input-ids', REF.prompts[1].input_ids.join(','), '--max-new-tokens', '6']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith(`${REF.prompts[1].text}${REF.prompts[1].greedy_text.split(' ').slice(0, 4).join(' ')}`), r.stdout);
  assert.match(r.stderr, /tp 2 · load .* ms · prefill 8 tokens in .* decode .* ms\/step/);
  assert.doesNotMatch(r.stdout, /ms\/step/);
});
