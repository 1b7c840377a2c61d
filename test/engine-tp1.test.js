// tp = 1 through the library: build(model) → save → Engine.fromDir → EngineRunner, against transformers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LlamaForCausalLM, build, Engine, EngineRunner, generate, perplexity, perplexityTokens, loadTokenizer,
  initWorld,
} from 'tprun';
import { MODEL, HELDOUT, REF, relL2, relDiff } from './helpers/engine.js';

let dir;
let world;
let runner;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-engine-tp1-'));
  const model = LlamaForCausalLM.fromHuggingFace(MODEL, { rank: 0 });
  const engine = await build(model, { max_seq_len: 512, max_batch_size: 8, calibration: true });
  await engine.save(join(dir, 'engine'));
  world = await initWorld();
  runner = await EngineRunner.load(await Engine.fromDir(join(dir, 'engine'), 0, { worldSize: 1 }), world, { threads: 2 });
});

after(async () => {
  await runner?.close();
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the tokenizer gives the reference input ids (BOS from its template)', () => {
  const tok = loadTokenizer(MODEL);
  for (const p of REF.prompts) assert.deepEqual(tok.encode(p.text), p.input_ids);
});

test('float32 tp=1: last-prompt logits and 24 greedy tokens of four batched prompts match transformers', async () => {
  const res = await generate(runner, REF.prompts.map((p) => p.input_ids), { maxNewTokens: 24 });
  REF.prompts.forEach((p, b) => {
    const err = relL2(res.lastPromptLogits[b], p.last_logits);
    assert.ok(err < 1e-4, `prompt ${b}: relative L2 error ${err}`);
    assert.deepEqual(res.newIds[b], p.greedy_new_ids, `prompt ${b}`);
  });
});

test('a prompt alone gives what it gives in a batch of different lengths', async () => {
  const alone = await generate(runner, [REF.prompts[3].input_ids], { maxNewTokens: 8 });
  const batch = await generate(runner, [REF.prompts[0].input_ids, REF.prompts[3].input_ids], { maxNewTokens: 8 });
  assert.deepEqual(batch.newIds[1], alone.newIds[0]);
  assert.ok(relL2(batch.lastPromptLogits[1], alone.lastPromptLogits[0]) < 1e-6);
});

test('a decode step feeds only the new token and reuses the KV cache', async () => {
  const ids = REF.prompts[0].input_ids;
  const S = ids.length;
  const cache = runner.newCache(1, S + 4);
  await runner.forward({ batch: 1, seq: S, ids, seqlensK: Int32Array.of(S - 1), totalSeq: S, positions: [S - 1], npos: 1 }, cache);
  const next = REF.prompts[0].greedy_new_ids[0];
  const step = await runner.forward({ batch: 1, seq: 1, ids: [next], seqlensK: Int32Array.of(S), totalSeq: S + 1, positions: [0], npos: 1 }, cache);
  // The same position computed from scratch over the whole sequence.
  const full = await runner.forward({ batch: 1, seq: S + 1, ids: [...ids, next], seqlensK: Int32Array.of(S), totalSeq: S + 1, positions: [S], npos: 1 });
  assert.ok(relL2(step, full) < 1e-5, `cached decode differs from recomputation: ${relL2(step, full)}`);
  // Without the cache the single token would see no context: a different distribution.
  const noCtx = await runner.forward({ batch: 1, seq: 1, ids: [next], seqlensK: Int32Array.of(0), totalSeq: 1, positions: [0], npos: 1 });
  assert.ok(relL2(noCtx, full) > 1e-2);
});

test('sampling: seeded, reproducible, and top-k 1 is greedy', async () => {
  const p = [REF.prompts[1].input_ids];
  const a = await generate(runner, p, { maxNewTokens: 12, temperature: 0.9, topP: 0.9, seed: 7 });
  const b = await generate(runner, p, { maxNewTokens: 12, temperature: 0.9, topP: 0.9, seed: 7 });
  assert.deepEqual(a.newIds, b.newIds);
  const k1 = await generate(runner, p, { maxNewTokens: 12, temperature: 1.5, topK: 1, seed: 3 });
  assert.deepEqual(k1.newIds[0], REF.prompts[1].greedy_new_ids.slice(0, 12));
  const stop = await generate(runner, [REF.prompts[2].input_ids], { maxNewTokens: 24, eosIds: [1] });
  assert.deepEqual(stop.newIds[0], REF.prompts[2].greedy_new_ids.slice(0, REF.prompts[2].greedy_new_ids.indexOf(1) + 1));
});

test('float32 tp=1 held-out perplexity is within 0.5% of transformers', async () => {
  const tok = loadTokenizer(MODEL);
  const tokens = perplexityTokens(tok, readFileSync(HELDOUT, 'utf8'), 0, 1, 8193);
  const res = await perplexity(runner, tokens, 256);
  assert.equal(res.tokens, 8192);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.005, `ppl ${res.ppl} vs ${REF.heldout_ppl.ppl}`);
});

test('calibration outputs expose the input of every linear', async () => {
  const ids = REF.prompts[0].input_ids;
  const acts = await runner.calibrationActivations({ batch: 1, seq: ids.length, ids, seqlensK: Int32Array.of(ids.length - 1), totalSeq: ids.length, positions: [ids.length - 1], npos: 1 });
  assert.equal(acts.size, 6 * 5 + 1);
  const qkv = acts.get('transformer.layers.0.attention.qkv');
  assert.deepEqual(qkv.dims, [1, ids.length, 256]);
  assert.deepEqual(acts.get('transformer.layers.2.mlp.proj').dims, [1, ids.length, 768]);
  // fc and gate read the same normalized activations.
  assert.deepEqual(acts.get('transformer.layers.1.mlp.fc').data, acts.get('transformer.layers.1.mlp.gate').data);
});
