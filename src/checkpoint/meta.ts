// Meta's original LLaMA format: params.json + consolidated.NN.pth (one torch.save archive per
// model-parallel rank). Presented as Hugging Face tensors: MP pieces joined on their split dim (found by
// comparing each piece's shape with the config), wq/wk permuted from interleaved rotary pairs to HF's
// rotate-half order. Reads stay ranged: a rank touches only the rows/columns of the pieces it needs.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod/v3'; // ~10 modules, not the v4 root's ~95: every convert rank parses a config (see rank/wire-schema.ts)
import type { Mapping, PretrainedConfig, RotaryScaling } from '../core/config.js';
import { InputError } from '../core/errors.js';
import { ITEMSIZE, byteSize } from '../core/dtype.js';
import { type FloatDType, parseFloatDType, readJson } from './hf-config.js';
import { hfExpectedShape } from './hf.js';
import { type TensorMeta, type TensorSource, rowsOf } from './source.js';
import { TorchFile } from './torch-file.js';
import { copyAxis } from '../sharding/slice.js';

const MetaParams = z.object({
  dim: z.number().int().positive(),
  n_layers: z.number().int().positive(),
  n_heads: z.number().int().positive(),
  n_kv_heads: z.number().int().positive().nullish(),
  vocab_size: z.number().int().default(-1),
  multiple_of: z.number().int().positive().default(256),
  ffn_dim_multiplier: z.number().positive().nullish(),
  norm_eps: z.number().positive().default(1e-5),
  rope_theta: z.number().positive().default(10000),
  use_scaled_rope: z.boolean().default(false),
  max_seq_len: z.number().int().positive().optional(),
}).passthrough();

/** Meta name of an HF tensor and, for wq/wk, the number of heads to un-interleave. */
function metaNameOf(hf: string, c: PretrainedConfig): { meta: string; permuteHeads?: number } {
  if (hf === 'model.embed_tokens.weight') return { meta: 'tok_embeddings.weight' };
  if (hf === 'model.norm.weight') return { meta: 'norm.weight' };
  if (hf === 'lm_head.weight') return { meta: 'output.weight' };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf)!;
  const p = `layers.${m[1]}`;
  const table: Record<string, { meta: string; permuteHeads?: number }> = {
    'input_layernorm.weight': { meta: `${p}.attention_norm.weight` },
    'post_attention_layernorm.weight': { meta: `${p}.ffn_norm.weight` },
    'self_attn.q_proj.weight': { meta: `${p}.attention.wq.weight`, permuteHeads: c.num_attention_heads },
    'self_attn.k_proj.weight': { meta: `${p}.attention.wk.weight`, permuteHeads: c.num_key_value_heads },
    'self_attn.v_proj.weight': { meta: `${p}.attention.wv.weight` },
    'self_attn.o_proj.weight': { meta: `${p}.attention.wo.weight` },
    'mlp.gate_proj.weight': { meta: `${p}.feed_forward.w1.weight` },
    'mlp.down_proj.weight': { meta: `${p}.feed_forward.w2.weight` },
    'mlp.up_proj.weight': { meta: `${p}.feed_forward.w3.weight` },
  };
  return table[m[2]];
}

function hfNames(layers: number, withLmHead: boolean): string[] {
  const names = ['model.embed_tokens.weight', 'model.norm.weight'];
  if (withLmHead) names.push('lm_head.weight');
  for (let l = 0; l < layers; l++) {
    for (const s of ['input_layernorm', 'post_attention_layernorm']) names.push(`model.layers.${l}.${s}.weight`);
    for (const s of ['q', 'k', 'v', 'o']) names.push(`model.layers.${l}.self_attn.${s}_proj.weight`);
    for (const s of ['gate', 'up', 'down']) names.push(`model.layers.${l}.mlp.${s}_proj.weight`);
  }
  return names;
}

interface Joined {
  meta: string;
  /** -1: every MP file holds the whole tensor (norms). */
  dim: number;
  /** Extent of each file's piece along `dim`. */
  extents: number[];
  permuteHeads?: number;
  info: TensorMeta;
}

export class MetaSource implements TensorSource {
  private joined = new Map<string, Joined>();

  constructor(readonly where: string, private files: TorchFile[], config: PretrainedConfig) {
    const withLmHead = files[0].tensors.has('output.weight');
    for (const hf of hfNames(config.num_hidden_layers, withLmHead)) {
      const { meta, permuteHeads } = metaNameOf(hf, config);
      const full = hfExpectedShape(hf, config);
      const pieces = files.map((f) => f.get(meta));
      const dtype = pieces[0].dtype;
      const where = `${files[0].file}: tensor ${meta}`;
      for (let i = 0; i < pieces.length; i++) {
        if (pieces[i].dtype !== dtype) throw new InputError(`${files[i].file}: tensor ${meta} is ${pieces[i].dtype}, ${files[0].file} has ${dtype}`);
        if (pieces[i].shape.length !== full.length) throw new InputError(`${files[i].file}: tensor ${meta}: shape [${pieces[i].shape}] disagrees with params.json (full [${full}])`);
      }
      let dim = -1;
      if (pieces.some((p) => p.shape.join() !== full.join())) {
        dim = full.findIndex((d, i) => pieces.reduce((a, p) => a + p.shape[i], 0) === d &&
          pieces.every((p) => p.shape.every((x, j) => j === i || x === full[j])));
        if (dim < 0) throw new InputError(`${where}: MP pieces [${pieces.map((p) => `[${p.shape}]`).join(', ')}] do not join into [${full}] from params.json`);
        if (permuteHeads && dim !== 0) throw new InputError(`${where}: expected a dim-0 split`);
        const hs = full[0] / (permuteHeads ?? 1);
        if (permuteHeads && pieces.some((p) => p.shape[0] % hs !== 0)) throw new InputError(`${where}: MP pieces split a head`);
      }
      this.joined.set(hf, { meta, dim, extents: dim < 0 ? [] : pieces.map((p) => p.shape[dim]), permuteHeads, info: { dtype, shape: full } });
    }
  }

  names(): string[] { return [...this.joined.keys()]; }
  has(name: string): boolean { return this.joined.has(name); }
  private j(name: string): Joined {
    const j = this.joined.get(name);
    if (!j) throw new InputError(`${this.where}: missing tensor ${name}`);
    return j;
  }
  info(name: string): TensorMeta { return this.j(name).info; }

  /** Rows of the joined tensor in Meta's row order. */
  private rawRows(j: Joined, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const { info, meta } = j;
    const rb = byteSize(info.dtype, info.shape.slice(1));
    if (j.dim < 0) return this.files[0].readRows(meta, start, end, dest, destOff);
    if (j.dim === 0) {
      let base = 0;
      this.files.forEach((f, i) => {
        const s = Math.max(start, base), e = Math.min(end, base + j.extents[i]);
        if (e > s) f.readRows(meta, s - base, e - base, dest, destOff + (s - start) * rb);
        base += j.extents[i];
      });
      return;
    }
    // Split on dim 1 (Meta's tok_embeddings, wo, w2): interleave each file's row block.
    const shape = [end - start, ...info.shape.slice(1)];
    const out = dest.subarray(destOff, destOff + (end - start) * rb);
    let at = 0;
    this.files.forEach((f, i) => {
      const pshape = [...shape];
      pshape[1] = j.extents[i];
      const block = new Uint8Array(byteSize(info.dtype, pshape));
      f.readRows(meta, start, end, block, 0);
      copyAxis(block, pshape, 0, out, shape, at, 1, j.extents[i], ITEMSIZE[info.dtype]);
      at += j.extents[i];
    });
  }

  private rawCols(j: Joined, start: number, end: number, rows?: readonly [number, number]): Uint8Array {
    const { info, meta } = j;
    const [r0, r1] = rows ?? [0, info.shape[0]];
    if (j.dim < 0) return this.files[0].readCols(meta, start, end, [r0, r1]);
    if (j.dim === 0) {
      const blocks: Uint8Array[] = [];
      let base = 0;
      this.files.forEach((f, i) => {
        const s = Math.max(r0, base), e = Math.min(r1, base + j.extents[i]);
        if (e > s) blocks.push(f.readCols(meta, start, end, [s - base, e - base]));
        base += j.extents[i];
      });
      return Buffer.concat(blocks);
    }
    const shape = [...info.shape];
    shape[0] = r1 - r0;
    shape[1] = end - start;
    const out = new Uint8Array(byteSize(info.dtype, shape));
    let base = 0;
    this.files.forEach((f, i) => {
      const s = Math.max(start, base), e = Math.min(end, base + j.extents[i]);
      if (e > s) {
        const bshape = [...shape];
        bshape[1] = e - s;
        copyAxis(f.readCols(meta, s - base, e - base, [r0, r1]), bshape, 0, out, shape, s - start, 1, e - s, ITEMSIZE[info.dtype]);
      }
      base += j.extents[i];
    });
    return out;
  }

  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const j = this.j(name);
    if (!j.permuteHeads) return this.rawRows(j, start, end, dest, destOff);
    // Whole heads are read in Meta order, then each HF row picks its Meta row within the head.
    const hs = j.info.shape[0] / j.permuteHeads;
    const h0 = Math.floor(start / hs), h1 = Math.ceil(end / hs);
    const rb = byteSize(j.info.dtype, j.info.shape.slice(1));
    const raw = new Uint8Array((h1 - h0) * hs * rb);
    this.rawRows(j, h0 * hs, h1 * hs, raw, 0);
    for (let r = start; r < end; r++) {
      const m = metaRow(r, hs) - h0 * hs;
      dest.set(raw.subarray(m * rb, (m + 1) * rb), destOff + (r - start) * rb);
    }
  }

  readCols(name: string, start: number, end: number, rows?: readonly [number, number]): Uint8Array {
    const j = this.j(name);
    if (!j.permuteHeads) return this.rawCols(j, start, end, rows);
    const raw = this.rawCols(j, start, end);
    const hs = j.info.shape[0] / j.permuteHeads;
    const n = rowsOf(j.info.shape);
    const rb = raw.length / n;
    const out = new Uint8Array(raw.length);
    for (let r = 0; r < n; r++) { const m = metaRow(r, hs); out.set(raw.subarray(m * rb, (m + 1) * rb), r * rb); }
    return rows ? out.subarray(rows[0] * rb, rows[1] * rb) : out;
  }

  close(): void { for (const f of this.files) f.close(); this.files = []; }
}

/**
 * Meta keeps each rotary pair (x[2i], x[2i+1]) adjacent; HF keeps the halves apart (x[i], x[i+hs/2]).
 * HF row j*(hs/2)+i of a head is Meta row 2i+j (the inverse of transformers' convert script `permute`).
 */
export function metaRow(hfRow: number, hs: number): number {
  const h = Math.floor(hfRow / hs), w = hfRow % hs, half = hs / 2;
  return h * hs + 2 * (w % half) + Math.floor(w / half);
}

export function metaFiles(dir: string): string[] {
  const files = fs.readdirSync(dir).filter((f) => /^consolidated\.\d+\.pth$/.test(f)).sort();
  if (!files.length) throw new InputError(`${dir}: no consolidated.NN.pth files`);
  files.forEach((f, i) => {
    if (Number(f.split('.')[1]) !== i) throw new InputError(`${path.join(dir, f)}: expected consolidated.${String(i).padStart(2, '0')}.pth (MP files must be numbered from 00 without gaps)`);
  });
  return files.map((f) => path.join(dir, f));
}

export function openMeta(dir: string, opts: { dtype?: FloatDType; mapping: Mapping; maxPositionEmbeddings?: number }): { config: PretrainedConfig; source: MetaSource } {
  const pfile = path.join(dir, 'params.json');
  const parsed = MetaParams.safeParse(readJson(pfile));
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new InputError(`${pfile}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const p = parsed.data;
  const files: TorchFile[] = [];
  try {
    for (const f of metaFiles(dir)) files.push(TorchFile.open(f));
    const emb = files[0].get('tok_embeddings.weight');
    let vocab = p.vocab_size;
    if (vocab <= 0) vocab = emb.shape[1] === p.dim ? emb.shape[0] * files.length : emb.shape[0];
    // Meta's FeedForward sizing (llama/model.py).
    let ffn = Math.floor((2 * 4 * p.dim) / 3);
    if (p.ffn_dim_multiplier) ffn = Math.floor(p.ffn_dim_multiplier * ffn);
    ffn = p.multiple_of * Math.ceil(ffn / p.multiple_of);
    const heads = p.n_heads;
    if (p.dim % heads) throw new InputError(`${pfile}: dim ${p.dim} does not divide by n_heads ${heads}`);
    const scaling: RotaryScaling | null = p.use_scaled_rope
      ? { type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
      : null;
    const config: PretrainedConfig = {
      architecture: 'LlamaForCausalLM',
      dtype: opts.dtype ?? parseFloatDType(emb.dtype, `${files[0].file}: tok_embeddings.weight`),
      vocab_size: vocab,
      hidden_size: p.dim,
      num_hidden_layers: p.n_layers,
      num_attention_heads: heads,
      num_key_value_heads: p.n_kv_heads ?? heads,
      head_size: p.dim / heads,
      intermediate_size: ffn,
      max_position_embeddings: opts.maxPositionEmbeddings ?? p.max_seq_len ?? 2048,
      hidden_act: 'silu',
      position_embedding_type: 'rope_gpt_neox',
      rotary_base: p.rope_theta,
      rotary_scaling: scaling,
      norm_epsilon: p.norm_eps,
      tie_word_embeddings: !files[0].tensors.has('output.weight'),
      use_parallel_embedding: false,
      embedding_sharding_dim: 0,
      mapping: opts.mapping,
      quantization: { quant_algo: null, kv_cache_quant_algo: null },
    };
    return { config, source: new MetaSource(dir, files, config) };
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
}
