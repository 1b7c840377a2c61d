// The one table of rules: dense and quantized companion tensors (CONTRACTS.md) cut and gathered back
// bit for bit at tp 1, 2, 4, 8; packed int4 row splits keep nibble pairs and scale groups whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shardTensor, gatherTensor, ruleFor, selection } from 'tprun';
import { rng, sameBytes } from './helpers/h3.js';
import { must } from './helpers/must.js';

/** @type {(tp: number, over?: Partial<import('tprun').ShardContext>) => import('tprun').ShardContext} */
const ctxFor = (tp, over = {}) => ({ tp, numHeads: 8, numKvHeads: 4, headSize: 32, vocabSize: 4096, parallelEmbedding: false, embeddingShardingDim: 0, ...over });

/** @param {import('tprun').DType} dtype @param {number[]} shape @param {() => number} r @returns {import('tprun').Tensor} */
function randomTensor(dtype, shape, r) {
  const n = shape.reduce((a, b) => a * b, 1) * ({ float32: 4, bfloat16: 2, float16: 2, uint8: 1, int8: 1, float8_e4m3fn: 1 }[dtype]);
  const data = new Uint8Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.floor(r() * 256);
  return { dtype, shape, data };
}

const H = 256, QKV = (8 + 2 * 4) * 32, I = 768, G = 32;
function quantizedModel(r) {
  const L = 'transformer.layers.0';
  return new Map([
    // int4 AWQ (W4A16_AWQ): packed weights, group scales, prequant factors
    [`${L}.attention.qkv.weight`, randomTensor('uint8', [QKV, H / 2], r)],
    [`${L}.attention.qkv.weights_scaling_factor`, randomTensor('float32', [QKV, H / G], r)],
    [`${L}.attention.qkv.prequant_scaling_factor`, randomTensor('float32', [H], r)],
    [`${L}.attention.dense.weight`, randomTensor('uint8', [H, H / 2], r)],
    [`${L}.attention.dense.weights_scaling_factor`, randomTensor('float32', [H, H / G], r)],
    [`${L}.attention.dense.prequant_scaling_factor`, randomTensor('float32', [H], r)],
    // int8 SmoothQuant: per-channel weight scales, per-tensor activation scale
    [`${L}.mlp.fc.weight`, randomTensor('int8', [I, H], r)],
    [`${L}.mlp.fc.per_channel_scale`, randomTensor('float32', [I], r)],
    [`${L}.mlp.fc.prequant_scaling_factor`, randomTensor('float32', [H], r)],
    [`${L}.mlp.fc.activation_scaling_factor`, randomTensor('float32', [], r)],
    [`${L}.mlp.proj.weight`, randomTensor('int8', [H, I], r)],
    [`${L}.mlp.proj.per_channel_scale`, randomTensor('float32', [H], r)],
    [`${L}.mlp.proj.prequant_scaling_factor`, randomTensor('float32', [I], r)],
    // FP8: per-tensor weight scale
    [`${L}.mlp.gate.weight`, randomTensor('float8_e4m3fn', [I, H], r)],
    [`${L}.mlp.gate.weights_scaling_factor`, randomTensor('float32', [], r)],
    [`${L}.attention.kv_cache_scaling_factor`, randomTensor('float32', [], r)],
    [`${L}.input_layernorm.weight`, randomTensor('bfloat16', [H], r)],
    ['transformer.vocab_embedding.weight', randomTensor('bfloat16', [4096, H], r)],
    ['lm_head.weight', randomTensor('bfloat16', [4096, H], r)],
  ]);
}

test('every tensor of a quantized model gathers back bit for bit at tp 1, 2, 4, 8', () => {
  const model = quantizedModel(rng(7));
  for (const tp of [1, 2, 4, 8]) {
    const ctx = ctxFor(tp);
    for (const [name, t] of model) {
      const shards = [...Array(tp).keys()].map((r) => shardTensor(name, t, ctx, r));
      const back = gatherTensor(name, shards, ctx);
      assert.deepEqual(back.shape, t.shape, `${name} tp=${tp}`);
      assert.ok(sameBytes(back.data, t.data), `${name} tp=${tp}`);
    }
  }
});

test('shard shapes follow CONTRACTS.md (column, row, replicated, fused qkv with KV replication)', () => {
  const m = quantizedModel(rng(1));
  const L = 'transformer.layers.0';
  const shape = (name, tp, r = 0) => shardTensor(name, must(m.get(name), name), ctxFor(tp), r).shape;
  assert.deepEqual(shape(`${L}.attention.qkv.weight`, 2), [(4 + 2 * 2) * 32, H / 2]);
  assert.deepEqual(shape(`${L}.attention.qkv.weight`, 8), [(1 + 2) * 32, H / 2]);
  assert.deepEqual(shape(`${L}.attention.qkv.weights_scaling_factor`, 8), [(1 + 2) * 32, H / G]);
  assert.deepEqual(shape(`${L}.attention.qkv.prequant_scaling_factor`, 4), [H]);
  assert.deepEqual(shape(`${L}.attention.dense.weight`, 4), [H, H / 2 / 4]);
  assert.deepEqual(shape(`${L}.attention.dense.weights_scaling_factor`, 4), [H, H / G / 4]);
  assert.deepEqual(shape(`${L}.attention.dense.prequant_scaling_factor`, 4), [H / 4]);
  assert.deepEqual(shape(`${L}.mlp.fc.per_channel_scale`, 4), [I / 4]);
  assert.deepEqual(shape(`${L}.mlp.fc.prequant_scaling_factor`, 4), [H]);
  assert.deepEqual(shape(`${L}.mlp.proj.per_channel_scale`, 4), [H]);
  assert.deepEqual(shape(`${L}.mlp.proj.prequant_scaling_factor`, 4), [I / 4]);
  assert.deepEqual(shape(`${L}.mlp.gate.weights_scaling_factor`, 4), []);
  assert.deepEqual(shape(`${L}.attention.kv_cache_scaling_factor`, 8), []);
  assert.deepEqual(shape(`${L}.input_layernorm.weight`, 8), [H]);
  assert.deepEqual(shape('transformer.vocab_embedding.weight', 8), [4096, H]);
  assert.deepEqual(shape('lm_head.weight', 8), [512, H]);
  // qkv scales on tp=8 ranks 2 and 3 share the KV rows (head floor(r*kv/tp) = 1)
  const s2 = shardTensor(`${L}.attention.qkv.weights_scaling_factor`, must(m.get(`${L}.attention.qkv.weights_scaling_factor`), 'qkv scales'), ctxFor(8), 2);
  const s3 = shardTensor(`${L}.attention.qkv.weights_scaling_factor`, must(m.get(`${L}.attention.qkv.weights_scaling_factor`), 'qkv scales'), ctxFor(8), 3);
  const row = (H / G) * 4;
  assert.ok(sameBytes(s2.data.subarray(32 * row), s3.data.subarray(32 * row)));
});

test('int4 row split: each rank holds the packing of its K slice, nibble pairs intact', () => {
  const r = rng(3);
  const N = 16, K = 256;
  const q = Array.from({ length: N }, () => Array.from({ length: K }, () => Math.floor(r() * 16)));
  const pack = (rows, k0, k1) => {
    const out = new Uint8Array(rows.length * (k1 - k0) / 2);
    rows.forEach((row, n) => { for (let k = k0; k < k1; k += 2) out[n * (k1 - k0) / 2 + (k - k0) / 2] = row[k] | (row[k + 1] << 4); });
    return out;
  };
  /** @type {import('tprun').Tensor} */
  const full = { dtype: 'uint8', shape: [N, K / 2], data: pack(q, 0, K) };
  for (const tp of [2, 4, 8]) {
    for (let rank = 0; rank < tp; rank++) {
      const s = shardTensor('transformer.layers.3.mlp.proj.weight', full, ctxFor(tp), rank);
      assert.ok(sameBytes(s.data, pack(q, rank * K / tp, (rank + 1) * K / tp)), `tp=${tp} rank=${rank}`);
    }
  }
});

test('clear errors: groups split across ranks, tp not dividing heads, unknown tensors', () => {
  /** @type {import('tprun').Tensor} */
  const scales = { dtype: 'float32', shape: [H, 2], data: new Uint8Array(H * 2 * 4) }; // K=256, g=128
  assert.throws(() => shardTensor('transformer.layers.0.attention.dense.weights_scaling_factor', scales, ctxFor(4), 0),
    /tensor transformer\.layers\.0\.attention\.dense\.weights_scaling_factor: dim 1 .* 2 does not divide by tp=4|groups must stay whole/);
  /** @type {import('tprun').Tensor} */
  const w = { dtype: 'bfloat16', shape: [QKV, H], data: new Uint8Array(QKV * H * 2) };
  assert.throws(() => shardTensor('transformer.layers.0.attention.qkv.weight', w, ctxFor(3), 0), /--tp 3 does not divide num_attention_heads=8/);
  assert.throws(() => shardTensor('transformer.layers.0.attention.qkv.weight', w, ctxFor(2, { numKvHeads: 2 }), 0), /expected \(heads 8 \+ 2 × kv heads 2\)/);
  assert.throws(() => ruleFor('model.layers.0.mlp.gate_proj.weight', 2, ctxFor(2)), /tensor model\.layers\.0\.mlp\.gate_proj\.weight: no sharding rule/);
  assert.throws(() => ruleFor('transformer.layers.0.mlp.fc.zeros', 2, ctxFor(2)), /no sharding rule for role "zeros"/);
});

test('vocab padding: lm_head and vocab-parallel embedding pad with zero rows, gather drops them', () => {
  const V = 4095;
  const r = rng(11);
  const t = randomTensor('bfloat16', [V, 8], r);
  for (const over of [{}, { parallelEmbedding: true }]) {
    const ctx = ctxFor(2, { vocabSize: V, ...over });
    for (const name of ['lm_head.weight', 'transformer.vocab_embedding.weight']) {
      const shards = [0, 1].map((k) => shardTensor(name, t, ctx, k));
      if (name.startsWith('lm_head') || over.parallelEmbedding) {
        assert.deepEqual(shards[1].shape, [2048, 8]);
        assert.ok(shards[1].data.subarray(2047 * 16).every((b) => b === 0), 'padding row is zero');
        assert.ok(sameBytes(shards[1].data.subarray(0, 2047 * 16), t.data.subarray(2048 * 16)));
      } else {
        assert.deepEqual(shards[1].shape, [V, 8]);
      }
      assert.ok(sameBytes(gatherTensor(name, shards, ctx).data, t.data), name);
    }
  }
  // embedding_sharding_dim 1: split the hidden dimension instead
  const ctx = ctxFor(2, { parallelEmbedding: true, embeddingShardingDim: 1 });
  const e = randomTensor('bfloat16', [4096, 8], r);
  const sel = selection(ruleFor('transformer.vocab_embedding.weight', 2, ctx), e.shape, ctx, 1);
  assert.deepEqual(sel, { axis: 1, pieces: [{ start: 4, end: 8 }], length: 4 });
});
