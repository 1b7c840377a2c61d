// A quantized TensorRT-LLM checkpoint (int4 AWQ + SmoothQuant + FP8 companions of CONTRACTS.md) saved
// at tp=2 and read back resharded to tp=1, 4, 8 gives exactly the direct shards of the full model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LlamaForCausalLM } from '../dist/model/llama.js';
import { shardTensor } from '../dist/sharding/slice.js';
import { contextFromConfig } from '../dist/sharding/rules.js';
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
  const full = new Map([
    ['transformer.vocab_embedding.weight', rand('bfloat16', [4096, H], r)],
    [`${L}.input_layernorm.weight`, rand('bfloat16', [H], r)],
    [`${L}.attention.qkv.weight`, rand('uint8', [QKV, H / 2], r)],
    [`${L}.attention.qkv.weights_scaling_factor`, rand('float32', [QKV, H / G], r)],
    [`${L}.attention.qkv.prequant_scaling_factor`, rand('float32', [H], r)],
    [`${L}.attention.dense.weight`, rand('uint8', [H, H / 2], r)],
    [`${L}.attention.dense.weights_scaling_factor`, rand('float32', [H, H / G], r)],
    [`${L}.attention.dense.prequant_scaling_factor`, rand('float32', [H], r)],
    [`${L}.attention.kv_cache_scaling_factor`, rand('float32', [], r)],
    [`${L}.post_layernorm.weight`, rand('bfloat16', [H], r)],
    [`${L}.mlp.fc.weight`, rand('int8', [I, H], r)],
    [`${L}.mlp.fc.per_channel_scale`, rand('float32', [I], r)],
    [`${L}.mlp.fc.activation_scaling_factor`, rand('float32', [], r)],
    [`${L}.mlp.gate.weight`, rand('float8_e4m3fn', [I, H], r)],
    [`${L}.mlp.gate.weights_scaling_factor`, rand('float32', [], r)],
    [`${L}.mlp.proj.weight`, rand('int8', [H, I], r)],
    [`${L}.mlp.proj.per_channel_scale`, rand('float32', [H], r)],
    [`${L}.mlp.proj.prequant_scaling_factor`, rand('float32', [I], r)],
    ['transformer.ln_f.weight', rand('bfloat16', [H], r)],
    ['lm_head.weight', rand('bfloat16', [4096, H], r)],
  ]);
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
