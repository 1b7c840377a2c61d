import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LlamaForCausalLM, readSafetensors, gatherTensor, contextFromConfig } from 'tprun';
import { BROWN, sameBytes, tmpDir } from './helpers/h3.js';

function hfTensors() {
  const m = new Map();
  for (const f of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    for (const [n, t] of readSafetensors(path.join(BROWN, f))) m.set(n, t);
  }
  return m;
}

test('fromHuggingFace tp=1 gives the HF tensors under TensorRT-LLM names, qkv = [q; k; v]', () => {
  const hf = hfTensors();
  const m = LlamaForCausalLM.fromHuggingFace(BROWN);
  assert.equal(m.config.dtype, 'bfloat16');
  assert.equal(m.config.num_key_value_heads, 4);
  assert.equal(m.config.head_size, 32);
  assert.equal(m.config.rotary_base, 10000);
  assert.equal(m.config.rotary_scaling, null);
  assert.equal(m.weights.size, 2 + 6 * 7 + 1);
  const cat = (...ts) => Buffer.concat(ts.map((t) => Buffer.from(t.data)));
  const L = 'model.layers.3';
  assert.ok(sameBytes(m.tensor('transformer.layers.3.attention.qkv.weight').data,
    cat(hf.get(`${L}.self_attn.q_proj.weight`), hf.get(`${L}.self_attn.k_proj.weight`), hf.get(`${L}.self_attn.v_proj.weight`))));
  const pairs = {
    'transformer.vocab_embedding.weight': 'model.embed_tokens.weight',
    'lm_head.weight': 'lm_head.weight',
    'transformer.ln_f.weight': 'model.norm.weight',
    'transformer.layers.3.mlp.fc.weight': `${L}.mlp.gate_proj.weight`,
    'transformer.layers.3.mlp.gate.weight': `${L}.mlp.up_proj.weight`,
    'transformer.layers.3.mlp.proj.weight': `${L}.mlp.down_proj.weight`,
    'transformer.layers.3.attention.dense.weight': `${L}.self_attn.o_proj.weight`,
    'transformer.layers.3.post_layernorm.weight': `${L}.post_attention_layernorm.weight`,
  };
  for (const [a, b] of Object.entries(pairs)) assert.ok(sameBytes(m.tensor(a).data, hf.get(b).data), a);
});

test('shards gather back to the tp=1 tensors bit for bit at tp 2, 4, 8 (tp 8 replicates KV heads)', () => {
  const full = LlamaForCausalLM.fromHuggingFace(BROWN);
  for (const tp of [2, 4, 8]) {
    const ranks = [...Array(tp).keys()].map((rank) => LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: tp }, rank }));
    const ctx = contextFromConfig(ranks[0].config);
    assert.deepEqual(ranks[1].config.mapping, { world_size: tp, tp_size: tp, pp_size: 1 });
    const kvr = Math.max(1, 4 / tp);
    assert.deepEqual(ranks[0].tensor('transformer.layers.0.attention.qkv.weight').shape, [(8 / tp + 2 * kvr) * 32, 256]);
    assert.deepEqual(ranks[0].tensor('transformer.layers.0.attention.dense.weight').shape, [256, 256 / tp]);
    assert.deepEqual(ranks[0].tensor('transformer.layers.0.mlp.proj.weight').shape, [256, 768 / tp]);
    assert.deepEqual(ranks[0].tensor('lm_head.weight').shape, [4096 / tp, 256]);
    for (const [name, t] of full.weights) {
      const g = gatherTensor(name, ranks.map((m) => m.tensor(name)), ctx);
      assert.deepEqual(g.shape, t.shape, name);
      assert.ok(sameBytes(g.data, t.data), `${name} at tp=${tp}`);
    }
  }
});

test('tp=8: rank r holds KV head floor(r*kv/tp), so ranks 2k and 2k+1 hold the same KV rows', () => {
  const r2 = LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 8 }, rank: 2 });
  const r3 = LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 8 }, rank: 3 });
  const a = r2.tensor('transformer.layers.1.attention.qkv.weight').data;
  const b = r3.tensor('transformer.layers.1.attention.qkv.weight').data;
  const row = 256 * 2, hs = 32;
  assert.ok(sameBytes(a.subarray(hs * row), b.subarray(hs * row)), 'k and v rows equal');
  assert.ok(!sameBytes(a.subarray(0, hs * row), b.subarray(0, hs * row)), 'q rows differ');
});

test('dtype conversion, tied embeddings and transformers-4 config keys', (t) => {
  const dir = tmpDir(t);
  for (const f of fs.readdirSync(BROWN)) fs.copyFileSync(path.join(BROWN, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  delete cfg.rope_parameters;
  delete cfg.dtype;
  Object.assign(cfg, { rope_theta: 500000, torch_dtype: 'bfloat16', tie_word_embeddings: true,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  const m = LlamaForCausalLM.fromHuggingFace(dir, { dtype: 'float32', mapping: { tp_size: 2 }, rank: 1 });
  assert.equal(m.config.rotary_base, 500000);
  assert.deepEqual(m.config.rotary_scaling, { type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
  assert.equal(m.config.dtype, 'float32');
  const e = m.tensor('transformer.vocab_embedding.weight');
  assert.equal(e.dtype, 'float32');
  // Tied: lm_head rank 1 = embedding rows [2048, 4096), exactly (bf16 -> fp32 is exact).
  assert.ok(sameBytes(m.tensor('lm_head.weight').data, e.data.subarray(2048 * 256 * 4)));
  const bf = LlamaForCausalLM.fromHuggingFace(BROWN).tensor('transformer.ln_f.weight');
  const f32 = new Float32Array(m.tensor('transformer.ln_f.weight').data.buffer);
  const u16 = new Uint16Array(bf.data.buffer, bf.data.byteOffset, 256);
  for (let i = 0; i < 256; i++) assert.equal(new Uint32Array(new Float32Array([f32[i]]).buffer)[0], u16[i] << 16);
});

test('saveCheckpoint then fromCheckpoint round-trips, and resharding 2 -> 4 equals converting at 4', (t) => {
  const dir = tmpDir(t);
  for (let rank = 0; rank < 2; rank++) LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 2 }, rank }).saveCheckpoint(dir);
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  assert.equal(cfg.position_embedding_type, 'rope_gpt_neox');
  assert.deepEqual(cfg.mapping, { world_size: 2, tp_size: 2, pp_size: 1 });
  const back = LlamaForCausalLM.fromCheckpoint(dir, 1);
  const direct = LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 2 }, rank: 1 });
  for (const [n, w] of direct.weights) assert.ok(sameBytes(back.tensor(n).data, w.data), n);
  for (let rank = 0; rank < 4; rank++) {
    const re = LlamaForCausalLM.fromCheckpoint(dir, rank, { mapping: { tp_size: 4 } });
    const want = LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 4 }, rank });
    assert.deepEqual(re.config.mapping, want.config.mapping);
    for (const [n, w] of want.weights) assert.ok(sameBytes(re.tensor(n).data, w.data), `${n} rank ${rank}`);
  }
});
