// build_config.lm_head_quant: CPU builds of weight-only models (int8_wo, int4_wo, int4_awq) quantize the
// float lm_head at build into MatMulNBits blocks (int8 by default, as llama-quantize types its output
// tensor); float models and GPU builds keep a float lm_head. The engine must still score and decode as
// the float lm_head does, also where the lm_head is the embedding table (tied): there the gather table
// stays float and only the lm_head copy is quantized.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, relDiff, relL2, tprun, jsonLines } from './helpers/engine.js';

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-lmhead-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

const config = (e) => JSON.parse(readFileSync(join(e, 'config.json'), 'utf8'));
const weightBytes = (e) => JSON.parse(readFileSync(join(e, 'rank0', 'manifest.json'), 'utf8')).weight_bytes;

async function build(name, args, model = MODEL) {
  const e = join(dir, name);
  const r = await tprun(['build', '--model', model, '--max-seq-len', '512', '--out', e, ...args], { timeoutMs: 600_000 });
  assert.equal(r.code, 0, r.stderr);
  return e;
}

async function greedy(engine, p) {
  const r = await tprun(['generate', '--engine', engine, '--input-ids', p.input_ids.join(','), '--max-new-tokens', '12', '--ignore-eos', '--json', '--logits'], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.stderr);
  return jsonLines(r.stdout)[0];
}

test('int8_wo CPU engine: lm_head int8 by default (recorded, 1 byte + a float32 scale per 256 weights instead of 4, as 32 gives), transformers\' greedy tokens, perplexity within 0.1% of float', { timeout: 1_800_000 }, async () => {
  const q = await build('int8', ['--quant', 'int8_wo']);
  const f = await build('int8-float-head', ['--quant', 'int8_wo', '--lm-head-quant', 'none']);
  // ggml's Q8_0 block, the default before CPU builds took 256 (build-config.ts says why): the same tokens.
  const q32 = await build('int8-b32', ['--quant', 'int8_wo', '--lm-head-block-size', '32']);
  assert.equal(config(q).build_config.lm_head_quant, 'int8');
  assert.equal(config(q).build_config.lm_head_block_size, 256);
  assert.equal(config(q32).build_config.lm_head_block_size, 32);
  assert.equal(config(f).build_config.lm_head_quant, 'none');
  const [V, H] = [REF.config?.vocab_size ?? 4096, 256];
  // The only tensor that differs: V×H float32 against V×H bytes + V×H/256 float32 scales (alignment aside).
  const saved = weightBytes(f) - weightBytes(q);
  assert.ok(Math.abs(saved - V * H * (4 - 1 - 4 / 256)) < 4096, `saved ${saved} bytes`);
  assert.ok(Math.abs(weightBytes(q32) - weightBytes(q) - V * H * (4 / 32 - 4 / 256)) < 4096);
  for (const p of REF.prompts.slice(0, 2)) {
    const a = await greedy(q, p);
    const b = await greedy(f, p);
    assert.deepEqual(a.new_ids, p.greedy_new_ids.slice(0, 12));
    assert.deepEqual((await greedy(q32, p)).new_ids, a.new_ids);
    const d = relL2(a.last_prompt_logits, b.last_prompt_logits);
    // Moved at all (the quantized lm_head ran), and not far: measured 0.004 on brown-llama-a.
    assert.ok(d > 0 && d < 0.02, `logits rel L2 between int8 and float lm_head: ${d}`);
    assert.ok(relL2(a.last_prompt_logits, p.last_logits) < 0.02);
  }
  const r = await tprun(['perplexity', '--engine', q, '--json'], { timeoutMs: 600_000 });
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.001, `ppl ${res.ppl} vs float ${REF.heldout_ppl.ppl}`);
});

test('tied embeddings at tp 2: the quantized lm_head (int8 and int4) decodes as the float one, the embedding gather stays float', { timeout: 1_800_000 }, async () => {
  // brown-llama-a with tie_word_embeddings: the lm_head is the embedding table.
  const tied = join(dir, 'tied-model');
  mkdirSync(tied);
  for (const f of readdirSync(MODEL)) if (f !== 'config.json') symlinkSync(join(MODEL, f), join(tied, f));
  writeFileSync(join(tied, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')), tie_word_embeddings: true }));
  const base = await build('tied-float-head', ['--quant', 'int8_wo', '--tp', '2', '--lm-head-quant', 'none'], tied);
  const q8 = await build('tied-int8', ['--quant', 'int8_wo', '--tp', '2'], tied);
  const q4 = await build('tied-int4', ['--quant', 'int8_wo', '--tp', '2', '--lm-head-quant', 'int4'], tied);
  assert.equal(config(q8).build_config.lm_head_quant, 'int8');
  // Each rank's lm_head shard is quantized; its embedding table is not (same bytes as the float-head engine's).
  for (const e of [q8, q4]) {
    const m = JSON.parse(readFileSync(join(e, 'rank1', 'manifest.json'), 'utf8'));
    assert.equal(m.embedding_bytes, JSON.parse(readFileSync(join(base, 'rank1', 'manifest.json'), 'utf8')).embedding_bytes);
    assert.ok(m.weight_bytes < weightBytes(base));
  }
  for (const p of REF.prompts.slice(0, 2)) {
    const b = await greedy(base, p);
    const a8 = await greedy(q8, p);
    const a4 = await greedy(q4, p);
    assert.deepEqual(a8.new_ids, b.new_ids);
    const d8 = relL2(a8.last_prompt_logits, b.last_prompt_logits);
    const d4 = relL2(a4.last_prompt_logits, b.last_prompt_logits);
    assert.ok(d8 > 0 && d8 < 0.02, `int8 lm_head logits rel L2 ${d8}`);
    assert.ok(d4 > d8 && d4 < 0.15, `int4 lm_head logits rel L2 ${d4} (int8: ${d8})`);
    assert.equal(a4.new_ids[0], b.new_ids[0]);
  }
});

test('float models and GPU builds keep a float lm_head', { timeout: 600_000 }, async () => {
  assert.equal(config(await build('float', [])).build_config.lm_head_quant, 'none');
  assert.equal(config(await build('gpu-int8', ['--quant', 'int8_wo', '--device', 'gpu'])).build_config.lm_head_quant, 'none');
  // A GPU build asked for a quantized lm_head keeps ggml's 32-wide blocks, and so does a CPU build with float
  // activations (256 is the default only with accuracy level 4: build-config.ts says why).
  assert.equal(config(await build('gpu-int8-head', ['--quant', 'int8_wo', '--device', 'gpu', '--lm-head-quant', 'int8'])).build_config.lm_head_block_size, 32);
  assert.equal(config(await build('cpu-int8-a0', ['--quant', 'int8_wo', '--int4-accuracy-level', '0'])).build_config.lm_head_block_size, 32);
});

test('--lm-head-block-size not a MatMulNBits block: one line naming the option, exit 2, no engine', async () => {
  const e = join(dir, 'bad');
  const r = await tprun(['build', '--model', MODEL, '--quant', 'int8_wo', '--lm-head-block-size', '48', '--out', e]);
  assert.equal(r.code, 2);
  assert.match(r.stderr.trim(), /^tprun: --lm-head-block-size 48: must be 16, 32, 64, 128 or 256/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.throws(() => readdirSync(e));
});
