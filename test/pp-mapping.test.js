// TensorRT-LLM's Mapping (tensorrt_llm/mapping.py) as src/sharding/mapping.ts implements it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkMapping, ppLayerRange, stageTensors, globalName, llamaTensorNames } from 'tprun';
import { Mapping } from '../dist/sharding/mapping.js';

test('rank -> (tp_rank, pp_rank), groups and neighbours as in mapping.py (tp 4 × pp 2 docstring example)', () => {
  const m = (r) => new Mapping({ world_size: 8, tp_size: 4, pp_size: 2 }, r);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((r) => [m(r).tpRank, m(r).ppRank]), [[0, 0], [1, 0], [2, 0], [3, 0], [0, 1], [1, 1], [2, 1], [3, 1]]);
  assert.deepEqual(m(5).tpGroup(), [4, 5, 6, 7]); // "2 tp groups: [0, 1, 2, 3], [4, 5, 6, 7]"
  assert.equal(m(1).nextPpRank(), 5); // "4 pp groups: [0, 4], [1, 5], ..."
  assert.equal(m(5).nextPpRank(), 1); // wraps: the last stage's next is the first
  assert.equal(m(1).prevPpRank(), 5);
  assert.ok(m(0).isFirstPpRank() && m(7).isLastPpRank() && !m(3).isLastPpRank());
});

test('pp_layers = torch.tensor_split: the first num_layers % pp stages get one more; pp > layers refused', () => {
  const split = (L, P) => Array.from({ length: P }, (_, p) => ppLayerRange(L, P, p)).map(({ first, count }) => [first, count]);
  assert.deepEqual(split(6, 4), [[0, 2], [2, 2], [4, 1], [5, 1]]);
  assert.deepEqual(split(22, 3), [[0, 8], [8, 7], [15, 7]]);
  assert.deepEqual(split(6, 6), [[0, 1], [1, 1], [2, 1], [3, 1], [4, 1], [5, 1]]);
  assert.deepEqual(new Mapping({ world_size: 2, tp_size: 1, pp_size: 2 }, 1).ppLayers(5), [3, 4]);
  assert.throws(() => checkMapping({ world_size: 7, tp_size: 1, pp_size: 7 }, 6), /--pp 7: more pipeline stages than the model's 6 layers/);
  assert.throws(() => checkMapping({ world_size: 3, tp_size: 2, pp_size: 2 }), /world_size 3 != tp_size 2 × pp_size 2/);
});

test('stage tensors: layers renumbered from 0, embedding on the first stage, ln_f and lm_head on the last', () => {
  const names = llamaTensorNames(6);
  const s1 = stageTensors(names, 6, 3, 1);
  assert.deepEqual([...new Set(s1.map(([l]) => l.split('.').slice(0, 3).join('.')))], ['transformer.layers.0', 'transformer.layers.1']);
  assert.equal(s1.find(([l]) => l === 'transformer.layers.0.mlp.fc.weight')?.[1], 'transformer.layers.2.mlp.fc.weight');
  assert.ok(stageTensors(names, 6, 3, 0).some(([l]) => l === 'transformer.vocab_embedding.weight'));
  assert.ok(!s1.some(([l]) => /vocab_embedding|ln_f|lm_head/.test(l)));
  const last = stageTensors(names, 6, 3, 2).map(([l]) => l);
  assert.ok(last.includes('lm_head.weight') && last.includes('transformer.ln_f.weight') && !last.includes('transformer.vocab_embedding.weight'));
  assert.equal(globalName('transformer.layers.1.attention.qkv.weight', 4), 'transformer.layers.5.attention.qkv.weight');
  assert.equal(globalName('lm_head.weight', 4), 'lm_head.weight');
});
