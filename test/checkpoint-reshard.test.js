// A quantized TensorRT-LLM checkpoint (int4 AWQ in TensorRT-LLM's layout + INT8 KV cache) saved
// at tp=2 and read back resharded to tp=1, 4, 8 gives exactly the direct shards of the full model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LlamaForCausalLM, shardTensor, contextFromConfig } from 'tprun';
import { BROWN, rng, sameBytes, tmpDir } from './helpers/h3.js';

function rand(dtype, shape, r) {
  const n = shape.reduce((a, b) => a * b, 1) * ({ float32: 4, bfloat16: 2, uint8: 1, int8: 1, float8_e4m3fn: 1 }[dtype]);
  const data = new Uint8Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.floor(r() * 256);
  return { dtype, shape, data };
}

test('quantized checkpoint reshards 2 -> 1, 4, 8 bit for bit', (t) => {
  const r = rng(5);
  const base = LlamaForCausalLM.fromHuggingFace(BROWN).config;
  const config = { ...base, num_hidden_layers: 1, quantization: { quant_algo: 'W4A16_AWQ', kv_cache_quant_algo: 'INT8', group_size: 32, pre_quant_scale: true } };
  const H = 256, QKV = 512, I = 768, G = 32, L = 'transformer.layers.0';
  // TensorRT-LLM's W4A16_AWQ layout (src/sharding/tllm-layout.ts): int8 [N/2, K] weights packed along N,
  // [N, K/g] scales, [K] prequant factors in the model dtype; INT8 KV scale [1].
  const full = new Map([
    ['transformer.vocab_embedding.weight', rand('bfloat16', [4096, H], r)],
    [`${L}.input_layernorm.weight`, rand('bfloat16', [H], r)],
    [`${L}.attention.kv_cache_scaling_factor`, rand('float32', [1], r)],
    [`${L}.post_layernorm.weight`, rand('bfloat16', [H], r)],
    ['transformer.ln_f.weight', rand('bfloat16', [H], r)],
    ['lm_head.weight', rand('bfloat16', [4096, H], r)],
  ]);
  for (const [lin, n, k] of /** @type {const} */ ([['attention.qkv', QKV, H], ['attention.dense', H, H], ['mlp.fc', I, H], ['mlp.gate', I, H], ['mlp.proj', H, I]])) {
    full.set(`${L}.${lin}.weight`, rand('int8', [n / 2, k], r));
    full.set(`${L}.${lin}.weights_scaling_factor`, rand('float32', [n, k / G], r));
    full.set(`${L}.${lin}.prequant_scaling_factor`, rand('bfloat16', [k], r));
  }
  const dir = path.join(tmpDir(t), 'q2');
  const mapping = (tp) => ({ world_size: tp, tp_size: tp, pp_size: 1 });
  for (let rank = 0; rank < 2; rank++) {
    const cfg = { ...config, mapping: mapping(2) };
    const m = new LlamaForCausalLM(cfg, rank);
    const ctx = contextFromConfig(cfg);
    m.load(new Map([...full].map(([n, w]) => [n, shardTensor(n, w, ctx, rank)])));
    m.saveCheckpoint(dir);
  }
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).quantization.quant_algo, 'W4A16_AWQ');
  for (const tp of [1, 4, 8]) {
    const ctx = contextFromConfig({ ...config, mapping: mapping(tp) });
    for (let rank = 0; rank < tp; rank++) {
      const m = LlamaForCausalLM.fromCheckpoint(dir, rank, { mapping: { tp_size: tp } });
      assert.deepEqual(m.config.mapping, mapping(tp));
      assert.equal(m.config.quantization.group_size, 32);
      assert.equal(m.weights.size, full.size);
      for (const [n, w] of full) {
        const want = shardTensor(n, w, ctx, rank);
        const got = m.tensor(n);
        assert.equal(got.dtype, w.dtype, n);
        assert.deepEqual(got.shape, want.shape, `${n} tp=${tp}`);
        assert.ok(sameBytes(got.data, want.data), `${n} tp=${tp} rank=${rank}`);
      }
    }
  }
});
