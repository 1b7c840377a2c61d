// A one-layer Hugging Face LLaMA of any shape, written by hand (gen-checkpoint's presets fix the shape): for
// tests of what a build accepts or refuses by shape (hidden sizes, head sizes, blocks). Weights are a fixed
// sine pattern, float32; no tokenizer.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../../dist/checkpoint/index.js';

/**
 * Writes model.safetensors and config.json into `dir` (which must exist).
 * @param {string} dir
 * @param {{ H: number, I: number, V?: number, nh?: number, nkv?: number, hd?: number }} shape
 */
export function writeTinyLlama(dir, { H, I, V = 64, nh = 2, nkv = 1, hd = 32 }) {
  /** @type {(...shape: number[]) => import('../../dist/core/tensor.js').Tensor} */
  const t = (...shape) => ({ dtype: 'float32', shape, data: new Uint8Array(new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i) * 0.02).buffer) });
  writeSafetensors(join(dir, 'model.safetensors'), new Map([
    ['model.embed_tokens.weight', t(V, H)], ['model.norm.weight', t(H)], ['lm_head.weight', t(V, H)],
    ['model.layers.0.input_layernorm.weight', t(H)], ['model.layers.0.post_attention_layernorm.weight', t(H)],
    ['model.layers.0.self_attn.q_proj.weight', t(nh * hd, H)], ['model.layers.0.self_attn.k_proj.weight', t(nkv * hd, H)],
    ['model.layers.0.self_attn.v_proj.weight', t(nkv * hd, H)], ['model.layers.0.self_attn.o_proj.weight', t(H, nh * hd)],
    ['model.layers.0.mlp.gate_proj.weight', t(I, H)], ['model.layers.0.mlp.up_proj.weight', t(I, H)], ['model.layers.0.mlp.down_proj.weight', t(H, I)],
  ]));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: 1,
    num_attention_heads: nh, num_key_value_heads: nkv, head_dim: hd, max_position_embeddings: 1024, rms_norm_eps: 1e-5, rope_theta: 10000,
    hidden_act: 'silu', tie_word_embeddings: false, torch_dtype: 'float32',
  }));
}
