// Quantization with pipeline parallelism: rank 0 alone reads, calibrates and quantizes; every stage
// receives only its own layers (renumbered from 0) over the world; the result scores as at pp 1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, relDiff, tprun, jsonLines } from './helpers/engine.js';

function tensorNames(file) {
  const b = readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  return Object.keys(JSON.parse(b.subarray(8, 8 + n).toString('utf8'))).filter((k) => k !== '__metadata__');
}

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-pp-quant-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

// int4 (not int8_wo: TensorRT-LLM's portable W8A16 checkpoint holds float weights, quantized at build).
test('convert --quant int4_wo --pp 2: each rank file holds its stage\'s quantized layers only', async () => {
  const out = join(dir, 'ckpt');
  const r = await tprun(['convert', '--model', MODEL, '--pp', '2', '--quant', 'int4_wo', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.mapping, { world_size: 2, tp_size: 1, pp_size: 2 });
  assert.equal(cfg.quantization.quant_algo, 'W4A16_AWQ');
  for (const rank of [0, 1]) {
    const names = tensorNames(join(out, `rank${rank}.safetensors`));
    const layers = new Set(names.filter((n) => n.startsWith('transformer.layers.')).map((n) => Number(n.split('.')[2])));
    assert.deepEqual([...layers].sort(), [0, 1, 2], `rank ${rank}`);
    assert.ok(names.includes('transformer.layers.2.mlp.proj.weights_scaling_factor'), `rank ${rank}: quantized`);
    assert.equal(names.includes('transformer.vocab_embedding.weight'), rank === 0);
    assert.equal(names.includes('lm_head.weight'), rank === 1);
  }
});

test('build --quant int8_wo --pp 2: perplexity as TensorRT-LLM W8A16 at pp 1 (within 0.1% of float32) and coherent text', async () => {
  const engine = join(dir, 'engine');
  let r = await tprun(['build', '--model', MODEL, '--pp', '2', '--quant', 'int8_wo', '--out', engine, '--max-seq-len', '512']);
  assert.equal(r.code, 0, r.stderr);
  r = await tprun(['perplexity', '--engine', engine, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.ok(relDiff(res.ppl, REF.heldout_ppl.ppl) < 0.001, `ppl ${res.ppl}`);
  r = await tprun(['generate', '--engine', engine, '--input-ids', REF.prompts[0].input_ids.join(','), '--max-new-tokens', '4', '--ignore-eos', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(jsonLines(r.stdout)[0].new_ids.length, 4);
});
