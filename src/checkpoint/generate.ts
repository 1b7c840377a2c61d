// Synthetic LLaMA-shaped checkpoints of any preset (deterministic pseudo-random weights), written as
// Hugging Face safetensors (sharded with an index) or Meta consolidated.NN.pth, for benchmarks and
// tests of conversion at sizes the embedded model does not reach.
import fs from 'node:fs';
import path from 'node:path';
import type { DType, Tensor } from '../core/tensor.js';
import type { PretrainedConfig } from '../core/config.js';
import { InputError } from '../core/errors.js';
import { byteSize, castTensor } from '../core/dtype.js';
import { SafetensorsWriter } from './safetensors.js';
import { type TensorMeta, type TensorSource, colsOf, rowsOf } from './source.js';
import { hfExpectedShape } from './hf.js';
import { metaRow } from './meta.js';
import { writeTorchFile } from './torch-write.js';
import { sliceTensor } from '../sharding/slice.js';
import { checkOutDir, commitTemp, openTemp, tempSibling } from './outdir.js';

export interface ModelShape {
  vocab_size: number; hidden_size: number; num_hidden_layers: number; num_attention_heads: number;
  num_key_value_heads: number; head_size: number; intermediate_size: number; max_position_embeddings: number;
  rotary_base: number; rotary_scaling: PretrainedConfig['rotary_scaling']; norm_epsilon: number;
  tie_word_embeddings?: boolean;
}

const base = { max_position_embeddings: 2048, rotary_base: 10000, rotary_scaling: null, norm_epsilon: 1e-5 };

export const PRESETS: Record<string, ModelShape> = {
  brown: { ...base, vocab_size: 4096, hidden_size: 256, num_hidden_layers: 6, num_attention_heads: 8, num_key_value_heads: 4, head_size: 32, intermediate_size: 768, max_position_embeddings: 1024 },
  'tinyllama-1.1b': { ...base, vocab_size: 32000, hidden_size: 2048, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, head_size: 64, intermediate_size: 5632 },
  'llama-2-7b': { ...base, vocab_size: 32000, hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, head_size: 128, intermediate_size: 11008, max_position_embeddings: 4096 },
  'llama-3-8b': { ...base, vocab_size: 128256, hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, head_size: 128, intermediate_size: 14336, max_position_embeddings: 8192, rotary_base: 500000 },
  'llama-3.2-1b': { ...base, vocab_size: 128256, hidden_size: 2048, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_size: 64, intermediate_size: 8192, max_position_embeddings: 131072, rotary_base: 500000, rotary_scaling: { type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }, tie_word_embeddings: true },
};

/** HF tensor names in the order transformers writes them. */
export function hfTensorNames(s: ModelShape): string[] {
  const names = ['model.embed_tokens.weight'];
  for (let l = 0; l < s.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    names.push(`${p}.input_layernorm.weight`, `${p}.mlp.down_proj.weight`, `${p}.mlp.gate_proj.weight`, `${p}.mlp.up_proj.weight`,
      `${p}.post_attention_layernorm.weight`, `${p}.self_attn.k_proj.weight`, `${p}.self_attn.o_proj.weight`,
      `${p}.self_attn.q_proj.weight`, `${p}.self_attn.v_proj.weight`);
  }
  names.push('model.norm.weight');
  if (!s.tie_word_embeddings) names.push('lm_head.weight');
  return names;
}

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Deterministic random HF tensors: every row is generated from (seed, name, row), so any row range reads
 * the same values. Matrices hold small values (|x| in [2^-9, 2^-5)), norms values in [1, 2).
 */
export class RandomSource implements TensorSource {
  readonly where = 'random';
  private metas = new Map<string, TensorMeta>();

  constructor(readonly shape: ModelShape, readonly dtype: DType, private seed = 0) {
    const cfg = shape as unknown as PretrainedConfig;
    for (const n of hfTensorNames(shape)) this.metas.set(n, { dtype, shape: hfExpectedShape(n, cfg) });
  }
  names(): string[] { return [...this.metas.keys()]; }
  has(name: string): boolean { return this.metas.has(name); }
  info(name: string): TensorMeta {
    const m = this.metas.get(name);
    if (!m) throw new InputError(`random: missing tensor ${name}`);
    return m;
  }
  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const m = this.info(name);
    if (m.shape.length === 1) {
      // A vector is generated as one row; element ranges are cut from it.
      const row = new Uint8Array(byteSize(m.dtype, m.shape));
      this.fillRows(name, m, 0, 1, row, 0);
      const isz = row.length / m.shape[0];
      dest.set(row.subarray(start * isz, end * isz), destOff);
      return;
    }
    this.fillRows(name, m, start, end, dest, destOff);
  }

  private fillRows(name: string, m: TensorMeta, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const cols = m.shape.length > 1 ? m.shape[1] : m.shape[0];
    const rows = [start, end];
    const norm = m.shape.length === 1;
    const bf = new Uint16Array(cols);
    const h = hash(name) ^ this.seed;
    for (let r = rows[0]; r < rows[1]; r++) {
      let x = (h ^ Math.imul(r + 1, 0x9e3779b1)) >>> 0 || 1;
      for (let i = 0; i < cols; i += 2) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        const a = x & 0xffff, b = x >>> 16;
        // norms: 1.x; matrices: sign, exponent 118..121, random mantissa
        bf[i] = norm ? 0x3f80 | (a & 0x7f) : (a & 0x807f) | ((118 + ((a >> 7) & 3)) << 7);
        if (i + 1 < cols) bf[i + 1] = norm ? 0x3f80 | (b & 0x7f) : (b & 0x807f) | ((118 + ((b >> 7) & 3)) << 7);
      }
      const t = castTensor({ dtype: 'bfloat16', shape: [cols], data: new Uint8Array(bf.buffer) }, this.dtype);
      dest.set(t.data, destOff + (r - rows[0]) * t.data.length);
    }
  }
  readCols(name: string, start: number, end: number, rows?: readonly [number, number]): Uint8Array {
    return colsOf(this.read(name), start, end, rows);
  }
  read(name: string): Tensor {
    const m = this.info(name);
    const data = new Uint8Array(byteSize(m.dtype, m.shape));
    this.readRows(name, 0, rowsOf(m.shape), data, 0);
    return { dtype: m.dtype, shape: m.shape, data };
  }
  close(): void {}
}

function readFull(src: TensorSource, name: string): Tensor {
  const m = src.info(name);
  const data = new Uint8Array(byteSize(m.dtype, m.shape));
  src.readRows(name, 0, rowsOf(m.shape), data, 0);
  return { dtype: m.dtype, shape: m.shape, data };
}

/** transformers' config.json for a shape (transformers 5 keys, or 4 with `style: 4`). */
export function hfConfigJson(s: ModelShape, dtype: DType, style: 4 | 5 = 5): Record<string, unknown> {
  const rope = s.rotary_scaling
    ? { rope_type: s.rotary_scaling.type, factor: s.rotary_scaling.factor, low_freq_factor: s.rotary_scaling.low_freq_factor,
      high_freq_factor: s.rotary_scaling.high_freq_factor, original_max_position_embeddings: s.rotary_scaling.original_max_position_embeddings }
    : null;
  const c: Record<string, unknown> = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden_size, intermediate_size: s.intermediate_size,
    num_hidden_layers: s.num_hidden_layers, num_attention_heads: s.num_attention_heads, num_key_value_heads: s.num_key_value_heads,
    head_dim: s.head_size, vocab_size: s.vocab_size, max_position_embeddings: s.max_position_embeddings, rms_norm_eps: s.norm_epsilon,
    hidden_act: 'silu', tie_word_embeddings: !!s.tie_word_embeddings, attention_bias: false, mlp_bias: false, bos_token_id: 1, eos_token_id: 2,
  };
  if (style === 5) Object.assign(c, { dtype, rope_parameters: { rope_theta: s.rotary_base, ...(rope ?? { rope_type: 'default' }) }, transformers_version: '5.17.0' });
  else Object.assign(c, { torch_dtype: dtype, rope_theta: s.rotary_base, rope_scaling: rope, transformers_version: '4.46.0' });
  return c;
}

/** HF directory: shards of at most `shardBytes` and an index when more than one. */
export function writeHf(dir: string, src: TensorSource, config: Record<string, unknown>, shardBytes = 5e9): void {
  const names = src.names();
  const groups: string[][] = [[]];
  let size = 0;
  for (const n of names) {
    const b = byteSize(src.info(n).dtype, src.info(n).shape);
    if (size > 0 && size + b > shardBytes) { groups.push([]); size = 0; }
    groups[groups.length - 1].push(n);
    size += b;
  }
  const fileName = (i: number) => groups.length === 1 ? 'model.safetensors'
    : `model-${String(i + 1).padStart(5, '0')}-of-${String(groups.length).padStart(5, '0')}.safetensors`;
  const weightMap: Record<string, string> = {};
  let total = 0;
  groups.forEach((g, i) => {
    const w = new SafetensorsWriter(path.join(dir, fileName(i)), g.map((n) => ({ name: n, ...src.info(n) })), { format: 'pt' });
    for (const n of g) {
      const t = readFull(src, n);
      w.write(n, t);
      weightMap[n] = fileName(i);
      total += t.data.length;
    }
    w.close();
  });
  if (groups.length > 1) {
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  }
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

/** Meta's split of each tensor over MP files: 0 or 1 = dim, -1 = every file holds it whole. */
function metaLayout(meta: string): number {
  if (/norm/.test(meta)) return -1;
  if (/tok_embeddings|attention\.wo|feed_forward\.w2/.test(meta)) return 1;
  return 0;
}

function metaParams(s: ModelShape): Record<string, unknown> {
  const baseFfn = Math.floor((2 * 4 * s.hidden_size) / 3);
  let multipleOf = 256;
  if (multipleOf * Math.ceil(baseFfn / multipleOf) !== s.intermediate_size) {
    if (s.intermediate_size >= baseFfn) multipleOf = s.intermediate_size;
    else throw new InputError(`intermediate_size ${s.intermediate_size} cannot be expressed in Meta's params.json`);
  }
  if (s.head_size * s.num_attention_heads !== s.hidden_size) throw new InputError('Meta format needs head_dim = dim / n_heads');
  return {
    dim: s.hidden_size, n_layers: s.num_hidden_layers, n_heads: s.num_attention_heads, n_kv_heads: s.num_key_value_heads,
    vocab_size: s.vocab_size, multiple_of: multipleOf, ffn_dim_multiplier: null, norm_eps: s.norm_epsilon, rope_theta: s.rotary_base,
    max_seq_len: s.max_position_embeddings,
    ...(s.rotary_scaling?.type === 'llama3' ? { use_scaled_rope: true } : {}),
  };
}

/** Meta directory with `mp` consolidated files; `src` has HF names (HF rotary order). */
export function writeMeta(dir: string, src: TensorSource, s: ModelShape, mp: number): void {
  const hs = s.head_size;
  const pairs: Array<[string, string, number?]> = [
    ['tok_embeddings.weight', 'model.embed_tokens.weight'], ['norm.weight', 'model.norm.weight'],
  ];
  if (!s.tie_word_embeddings) pairs.push(['output.weight', 'lm_head.weight']);
  for (let l = 0; l < s.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    pairs.push(
      [`layers.${l}.attention.wq.weight`, `${p}.self_attn.q_proj.weight`, 1], [`layers.${l}.attention.wk.weight`, `${p}.self_attn.k_proj.weight`, 1],
      [`layers.${l}.attention.wv.weight`, `${p}.self_attn.v_proj.weight`], [`layers.${l}.attention.wo.weight`, `${p}.self_attn.o_proj.weight`],
      [`layers.${l}.feed_forward.w1.weight`, `${p}.mlp.gate_proj.weight`], [`layers.${l}.feed_forward.w2.weight`, `${p}.mlp.down_proj.weight`],
      [`layers.${l}.feed_forward.w3.weight`, `${p}.mlp.up_proj.weight`],
      [`layers.${l}.attention_norm.weight`, `${p}.input_layernorm.weight`], [`layers.${l}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`],
    );
  }
  for (const [meta, , perm] of pairs) {
    const dim = metaLayout(meta);
    const full = src.info(pairs.find((x) => x[0] === meta)![1]).shape;
    if (dim >= 0 && full[dim] % mp) throw new InputError(`tensor ${meta}: dim ${dim} (${full[dim]}) does not divide into ${mp} MP files`);
    if (perm && dim === 0 && (full[0] / mp) % hs) throw new InputError(`tensor ${meta}: ${mp} MP files would split a head`);
  }
  for (let f = 0; f < mp; f++) {
    const specs = pairs.map(([meta, hf]) => {
      const m = src.info(hf);
      const dim = metaLayout(meta);
      const shape = [...m.shape];
      if (dim >= 0) shape[dim] /= mp;
      return { name: meta, dtype: m.dtype, shape };
    });
    const archive = `consolidated.${String(f).padStart(2, '0')}`;
    writeTorchFile(path.join(dir, `${archive}.pth`), archive, specs, (meta) => {
      const [, hf, perm] = pairs.find((x) => x[0] === meta)!;
      let t = readFull(src, hf);
      if (perm) {
        const rb = t.data.length / t.shape[0];
        const out = new Uint8Array(t.data.length);
        for (let r = 0; r < t.shape[0]; r++) out.set(t.data.subarray(r * rb, (r + 1) * rb), metaRow(r, hs) * rb);
        t = { ...t, data: out };
      }
      const dim = metaLayout(meta);
      if (dim < 0) return t;
      const n = t.shape[dim] / mp;
      return sliceTensor(t, { axis: dim, pieces: [{ start: f * n, end: (f + 1) * n }], length: n });
    });
  }
  fs.writeFileSync(path.join(dir, 'params.json'), JSON.stringify(metaParams(s), null, 2));
}

export interface GenerateOptions {
  preset: string;
  out: string;
  format?: 'hf' | 'meta';
  dtype?: 'float32' | 'float16' | 'bfloat16';
  /** Override the preset's layer count (smaller / larger models of the same width). */
  layers?: number;
  mp?: number;
  shardBytes?: number;
  seed?: number;
  configStyle?: 4 | 5;
  /** Replace an existing `out` that tprun did not write (outdir.ts). */
  force?: boolean;
}

export function generateCheckpoint(o: GenerateOptions): { bytes: number; shape: ModelShape } {
  const preset = PRESETS[o.preset];
  if (!preset) throw new InputError(`--preset ${o.preset}: unknown (${Object.keys(PRESETS).join(', ')})`);
  const shape = { ...preset, ...(o.layers ? { num_hidden_layers: o.layers } : {}) };
  const dtype = o.dtype ?? 'bfloat16';
  const src = new RandomSource(shape, dtype, o.seed ?? 0);
  checkOutDir(o.out, o);
  const tmp = tempSibling(o.out, `${process.pid}`);
  openTemp(tmp);
  if (o.format === 'meta') writeMeta(tmp, src, shape, o.mp ?? 1);
  else writeHf(tmp, src, hfConfigJson(shape, dtype, o.configStyle ?? 5), o.shardBytes);
  commitTemp(tmp, o.out, o);
  const bytes = src.names().reduce((a, n) => a + byteSize(dtype, src.info(n).shape), 0);
  return { bytes, shape };
}
