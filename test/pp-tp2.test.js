// tp 2 × pp 2 (four ranks) through a TensorRT-LLM checkpoint, and an uneven split (pp 4 of 6 layers:
// 2 + 2 + 1 + 1, as TensorRT-LLM's Mapping.pp_layers cuts it), float32 on the CPU, against transformers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, tprun } from './helpers/engine.js';
import { checkGreedy, checkPerplexity } from './helpers/pp.js';

function tensorNames(file) {
  const b = readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  return Object.keys(JSON.parse(b.subarray(8, 8 + n).toString('utf8'))).filter((k) => k !== '__metadata__').sort();
}

let dir;
let ckpt;
let engine;
let uneven;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-pp-tp2-'));
  ckpt = join(dir, 'ckpt');
  engine = join(dir, 'engine');
  uneven = join(dir, 'pp4');
  let r = await tprun(['convert', '--model', MODEL, '--tp', '2', '--pp', '2', '--out', ckpt]);
  assert.equal(r.code, 0, r.stderr);
  r = await tprun(['build', '--checkpoint', ckpt, '--tokenizer', MODEL, '--out', engine, '--max-seq-len', '512']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /4 rank\(s\) \(tp 2 × pp 2\)/);
  r = await tprun(['build', '--model', MODEL, '--pp', '4', '--out', uneven, '--max-seq-len', '512']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('the tp 2 × pp 2 checkpoint has TensorRT-LLM\'s layout: rank = pp_rank × tp + tp_rank, local layer numbers, embedding first, ln_f and lm_head last', () => {
  const cfg = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.mapping, { world_size: 4, tp_size: 2, pp_size: 2 });
  const layers = (names) => [...new Set(names.filter((n) => n.startsWith('transformer.layers.')).map((n) => Number(n.split('.')[2])))];
  for (const r of [0, 1, 2, 3]) {
    const names = tensorNames(join(ckpt, `rank${r}.safetensors`));
    assert.deepEqual(layers(names), [0, 1, 2], `rank ${r}`);
    assert.equal(names.includes('transformer.vocab_embedding.weight'), r < 2, `rank ${r}: embedding`);
    assert.equal(names.includes('lm_head.weight'), r >= 2, `rank ${r}: lm_head`);
    assert.equal(names.includes('transformer.ln_f.weight'), r >= 2, `rank ${r}: ln_f`);
  }
});

test('float32 tp 2 × pp 2: four prompts, one micro-batch each, give transformers\' ids, logits and greedy tokens', async () => {
  await checkGreedy(engine, ['--micro-batches', '4']);
});

test('float32 tp 2 × pp 2: held-out perplexity within 0.5% of transformers', async () => {
  await checkPerplexity(engine);
});

test('uneven split, pp 4 of 6 layers: stages hold 2, 2, 1, 1 layers and match transformers', async () => {
  const count = (r) => {
    const g = readFileSync(join(uneven, `rank${r}`, 'seg0.onnx')).toString('latin1');
    let n = 0;
    while (g.includes(`past.${n}.key`)) n++;
    return n;
  };
  assert.deepEqual([0, 1, 2, 3].map(count), [2, 2, 1, 1]);
  await checkGreedy(uneven);
});
