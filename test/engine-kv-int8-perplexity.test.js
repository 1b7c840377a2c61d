// perplexity on engines built with --kv-cache int8. Its windows run without a cache; the int8 cache reaches
// GroupQueryAttention through DequantizeLinear, whose output onnxruntime lets GQA's present reuse in place,
// so an empty past [B, H, 0, D] failed every such engine ("Shape mismatch attempting to re-use buffer
// {B,4,0,32} != {B,4,256,32}"). A window is a prefill, which attends over its own float keys and values
// (as TensorRT-LLM's context phase does), so the int8 cache leaves perplexity where the float cache puts it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, relDiff, tprun, jsonLines } from './helpers/engine.js';

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-kv8-ppl-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

async function build(name, args) {
  const e = join(dir, name);
  const r = await tprun(['build', '--model', MODEL, '--out', e, ...args], { timeoutMs: 600_000 });
  assert.equal(r.code, 0, r.stderr);
  return e;
}

async function perplexity(engine) {
  const r = await tprun(['perplexity', '--engine', engine, '--json'], { timeoutMs: 600_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.left.length, 0, `processes left behind: ${r.left}`);
  const [res] = jsonLines(r.stdout);
  for (const rk of res.ranks) assert.equal(rk.kv_cache_dtype, 'int8');
  return res;
}

test('perplexity on a float32 engine with --kv-cache int8 (tp 1): runs, and matches transformers as the float cache does', { timeout: 1_800_000 }, async () => {
  const res = await perplexity(await build('f32-kv8', ['--kv-cache', 'int8']));
  assert.equal(res.tokens, 8192); // the reference protocol's predictions (perplexity's default --max-tokens)
  // The float32 engine lands within 1e-6 of the reference (README); its windows never read the int8 cache.
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 1e-4, `ppl ${res.ppl} vs transformers ${REF.heldout_ppl.ppl}`);
});

test('perplexity on int8_wo engines with --kv-cache int8, tp 1 and tp 2: run on every rank, within 0.1% of float (the int8_wo bound)', { timeout: 1_800_000 }, async () => {
  // tp 1 (one segment) failed before the fix; tp 2 (segments cut at the all-reduces) happened not to, and
  // must keep working now that its windows, too, run over a scratch cache.
  for (const tp of [1, 2]) {
    const res = await perplexity(await build(`wo-tp${tp}-kv8`, ['--tp', String(tp), '--quant', 'int8_wo', '--kv-cache', 'int8']));
    assert.equal(res.ranks.length, tp);
    assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.001, `tp ${tp}: ppl ${res.ppl} vs float ${REF.heldout_ppl.ppl}`);
  }
});
