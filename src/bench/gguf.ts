// A GGUF v3 writer for the llama.cpp peer of `tprun bench generate --peer llama.cpp`: the same weights
// as a Hugging Face LLaMA directory, in llama.cpp's layout, as F16, Q8_0 (int8, one f16 scale per 32 weights) or Q4_0 (weight-only int4 with one
// f16 scale per 32 weights).
//
// Format (ggml-org/llama.cpp ggml/include/gguf.h and docs/gguf.md): "GGUF", version 3, tensor count,
// key/value count; the key/values (typed, strings as u64 length + bytes); per tensor its name, dims
// (innermost first: an HF [out, in] weight is [in, out]), ggml type and offset into the data section,
// which starts at the next multiple of general.alignment (32). Names and metadata keys follow
// convert_hf_to_gguf.py's LlamaModel (gguf-py/gguf/constants.py MODEL_TENSOR names): q_proj and
// k_proj rows are permuted from HF's half-split rotary order to llama.cpp's adjacent pairs
// (LlamaModel.permute), norms stay F32 (llama.cpp multiplies in F32). Q4_0 and Q8_0 files type their
// embedding and output tensors as llama-quantize does (src/llama-quant.cpp, llama_tensor_get_type_impl):
// output.weight Q6_K in a Q4_0 file (Q8_0 where its rows are not a multiple of 256, as
// tensor_type_fallback) and Q8_0 in a Q8_0 file; token_embd.weight the file's type, or the output's
// where the embeddings are tied. So the peer reads what a user's llama.cpp model would, next to tprun's
// int8 lm_head (build_config.lm_head_quant).

import { closeSync, existsSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { readJson } from '../checkpoint/hf-config.js';
import { openHfTensors } from '../checkpoint/hf.js';
import { toFloat32 } from '../core/dtype.js';
import type { DType } from '../core/tensor.js';
import { f16BitsToFloat, f32BitsToF16Bits, floatToF32Bits } from '../core/half.js';

export type GgufWeightType = 'f16' | 'q4_0' | 'q8_0';

const GGML = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q6_K: 14 } as const;
/** [bytes, values] of one block of each type (ggml's type_traits: type_size, blck_size). */
const BLOCK: Record<number, [number, number]> = { [GGML.F32]: [4, 1], [GGML.F16]: [2, 1], [GGML.Q4_0]: [18, 32], [GGML.Q8_0]: [34, 32], [GGML.Q6_K]: [210, 256] };
const KV = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9 } as const;
const ALIGN = 32;
const QK4_0 = 32;

type Value =
  | { t: 'u32' | 'i32' | 'f32'; v: number }
  | { t: 'bool'; v: boolean }
  | { t: 'str'; v: string }
  | { t: 'strs'; v: string[] }
  | { t: 'i32s'; v: number[] };

/** Bytes of the GGUF header up to (not including) the tensor data. */
class HeaderWriter {
  private parts: Buffer[] = [];
  u32(x: number) { const b = Buffer.alloc(4); b.writeUInt32LE(x); this.parts.push(b); }
  i32(x: number) { const b = Buffer.alloc(4); b.writeInt32LE(x); this.parts.push(b); }
  u64(x: number) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(x)); this.parts.push(b); }
  f32(x: number) { const b = Buffer.alloc(4); b.writeFloatLE(x); this.parts.push(b); }
  str(s: string) { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.parts.push(b); }
  value(v: Value) {
    switch (v.t) {
      case 'u32': this.u32(KV.UINT32); this.u32(v.v); break;
      case 'i32': this.u32(KV.INT32); this.i32(v.v); break;
      case 'f32': this.u32(KV.FLOAT32); this.f32(v.v); break;
      case 'bool': this.u32(KV.BOOL); this.parts.push(Buffer.of(v.v ? 1 : 0)); break;
      case 'str': this.u32(KV.STRING); this.str(v.v); break;
      case 'strs': this.u32(KV.ARRAY); this.u32(KV.STRING); this.u64(v.v.length); for (const s of v.v) this.str(s); break;
      case 'i32s': this.u32(KV.ARRAY); this.u32(KV.INT32); this.u64(v.v.length); for (const x of v.v) this.i32(x); break;
    }
  }
  bytes(): Buffer { return Buffer.concat(this.parts); }
}

interface PlannedTensor {
  name: string;
  /** GGUF dims, innermost first. */
  dims: number[];
  type: number;
  bytes: number;
  /** The tensor's bytes as written (ggml type `type`). */
  read: () => Uint8Array;
}

/** GPT-2's byte → printable-character table (byte-level BPE vocabularies spell bytes this way). */
function byteChars(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  return out;
}

/**
 * The vocabulary as llama.cpp's "gpt2" (byte-level BPE) tokenizer: tokenizer.json's vocab, merges and
 * added tokens (special ones typed CONTROL = 3). A directory without tokenizer.json (a random-weights
 * model made only to time) gets placeholder tokens: the 256 byte characters, then `<|id|>`.
 */
function vocabMetadata(dir: string, vocabSize: number, hf: Record<string, unknown>): [string, Value][] {
  const tokens = new Array<string>(vocabSize);
  const types = new Array<number>(vocabSize).fill(1);
  let merges: string[] = [];
  const file = join(dir, 'tokenizer.json');
  if (existsSync(file)) {
    const tj = readJson(file) as { model?: { type?: string; vocab?: Record<string, number>; merges?: (string | string[])[] }; added_tokens?: { id: number; content: string; special?: boolean }[] };
    if (tj.model?.type !== 'BPE' || !tj.model.vocab) throw new InputError(`${file}: only byte-level BPE tokenizers are written to GGUF (model.type is ${tj.model?.type})`);
    for (const [tok, id] of Object.entries(tj.model.vocab)) if (id < vocabSize) tokens[id] = tok;
    for (const a of tj.added_tokens ?? []) if (a.id < vocabSize) { tokens[a.id] = a.content; if (a.special) types[a.id] = 3; }
    merges = (tj.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  } else {
    byteChars().forEach((c, i) => { if (i < vocabSize) tokens[i] = c; });
  }
  for (let i = 0; i < vocabSize; i++) if (tokens[i] === undefined) { tokens[i] = `<|${i}|>`; types[i] = 5; } // UNUSED
  const kv: [string, Value][] = [
    ['tokenizer.ggml.model', { t: 'str', v: 'gpt2' }],
    ['tokenizer.ggml.pre', { t: 'str', v: 'gpt-2' }],
    ['tokenizer.ggml.tokens', { t: 'strs', v: tokens }],
    ['tokenizer.ggml.token_type', { t: 'i32s', v: types }],
    ['tokenizer.ggml.merges', { t: 'strs', v: merges }],
  ];
  if (typeof hf.bos_token_id === 'number') kv.push(['tokenizer.ggml.bos_token_id', { t: 'u32', v: hf.bos_token_id }], ['tokenizer.ggml.add_bos_token', { t: 'bool', v: true }]);
  if (typeof hf.eos_token_id === 'number') kv.push(['tokenizer.ggml.eos_token_id', { t: 'u32', v: hf.eos_token_id }]);
  return kv;
}

/**
 * HF q_proj/k_proj rows: per head, [first half; second half] → interleaved pairs (convert_hf_to_gguf.py
 * LlamaModel.permute). Works on any element type: `w` holds `rows` rows of `rowBytes` bytes.
 */
export function permuteRotary<T extends Uint8Array | Float32Array>(w: T, rows: number, rowLen: number, heads: number): T {
  const out = new (w.constructor as new (n: number) => T)(w.length);
  const hd = rows / heads;
  const half = hd / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const from = h * hd + s * half + i;
        const to = h * hd + 2 * i + s;
        out.set(w.subarray(from * rowLen, (from + 1) * rowLen), to * rowLen);
      }
    }
  }
  return out;
}

/** ggml's quantize_row_q4_0_ref: per 32 values, d = (value of largest magnitude) / -8, q = clamp(round(x/d) + 8). */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % QK4_0) throw new Error(`Q4_0 needs rows of a multiple of ${QK4_0} values`);
  const nb = x.length / QK4_0;
  const out = new Uint8Array(nb * 18);
  for (let b = 0; b < nb; b++) {
    const o = b * QK4_0;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK4_0; j++) { const v = x[o + j]; if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; } }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    const h = f32BitsToF16Bits(floatToF32Bits(d));
    out[b * 18] = h & 255;
    out[b * 18 + 1] = h >> 8;
    for (let j = 0; j < QK4_0 / 2; j++) {
      const q0 = Math.min(15, Math.trunc(Math.fround(x[o + j] * id) + 8.5));
      const q1 = Math.min(15, Math.trunc(Math.fround(x[o + j + 16] * id) + 8.5));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** ggml's quantize_row_q8_0_ref: per 32 values, d = amax / 127 (stored F16), q = round(x / d) as int8. */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % QK4_0) throw new Error(`Q8_0 needs rows of a multiple of ${QK4_0} values`);
  const nb = x.length / QK4_0;
  const out = new Uint8Array(nb * 34);
  for (let b = 0; b < nb; b++) {
    const o = b * QK4_0;
    let amax = 0;
    for (let j = 0; j < QK4_0; j++) amax = Math.max(amax, Math.abs(x[o + j]));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    const h = f32BitsToF16Bits(floatToF32Bits(d));
    out[b * 34] = h & 255;
    out[b * 34 + 1] = h >> 8;
    // roundf: halves away from zero.
    for (let j = 0; j < QK4_0; j++) { const v = Math.fround(x[o + j] * id); out[b * 34 + 2 + j] = (Math.sign(v) * Math.round(Math.abs(v))) & 255; }
  }
  return out;
}

/** ggml's nearest_int: float32 round half to even (adding 1.5 · 2^23). */
function nearestInt(v: number): number {
  return Math.fround(Math.fround(v) + 12582912) - 12582912;
}

/**
 * ggml's make_qx_quants for Q6_K (rmse_type 1, no importance weights): the scale of 16 values that
 * minimises their x²-weighted error over 19 candidate steps around max / -32; levels go to L as 0..63.
 */
function makeQxQuants(x: Float32Array, o: number, L: Int8Array, lo: number): number {
  const n = 16, nmax = 32;
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) { const a = Math.abs(x[o + i]); if (a > amax) { amax = a; max = x[o + i]; } }
  if (amax < 1e-15) { L.fill(0, lo, lo + n); return 0; }
  const sums = (iscale: number): [number, number] => {
    let slx = 0, sl2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[o + i];
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(iscale * v)));
      const w = v * v;
      slx += w * v * l;
      sl2 += w * l * l;
    }
    return [slx, sl2];
  };
  const fill = (iscale: number) => { for (let i = 0; i < n; i++) L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(iscale * x[o + i]))); };
  let iscale = -nmax / max;
  fill(iscale);
  let [sumlx, suml2] = sums(iscale);
  let scale = suml2 ? sumlx / suml2 : 0;
  let best = scale * sumlx;
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = -(nmax + 0.1 * is) / max;
    [sumlx, suml2] = sums(iscale);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) { fill(iscale); scale = sumlx / suml2; best = scale * sumlx; }
  }
  return scale;
}

/**
 * After ggml's quantize_row_q6_K_ref (ggml-quants.c): super-blocks of 256 values, 16 sub-blocks of 16
 * with int8 scales under one F16 scale, 6-bit levels split into ql (low 4 bits) and qh (high 2 bits).
 * Block layout (block_q6_K): ql[128], qh[64], scales[16], d. Arithmetic in doubles where ggml uses
 * floats, so an occasional level may differ from llama-quantize's; the size and kernel are the same.
 */
export function quantizeQ6_K(x: Float32Array): Uint8Array {
  const QK = 256;
  if (x.length % QK) throw new Error(`Q6_K needs rows of a multiple of ${QK} values`);
  const nb = x.length / QK;
  const out = new Uint8Array(nb * 210);
  const L = new Int8Array(QK);
  const scales = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const o = b * QK, y = b * 210;
    let maxScale = 0, maxAbs = 0;
    for (let ib = 0; ib < 16; ib++) {
      scales[ib] = makeQxQuants(x, o + 16 * ib, L, 16 * ib);
      if (Math.abs(scales[ib]) > maxAbs) { maxAbs = Math.abs(scales[ib]); maxScale = scales[ib]; }
    }
    if (maxAbs < 1e-15) continue; // all zero: d = 0, everything 0
    const iscale = -128 / maxScale;
    const dh = f32BitsToF16Bits(floatToF32Bits(1 / iscale));
    out[y + 208] = dh & 255;
    out[y + 209] = dh >> 8;
    const d16 = f16BitsToFloat(dh);
    for (let ib = 0; ib < 16; ib++) {
      const sc = Math.min(127, nearestInt(iscale * scales[ib]));
      out[y + 192 + ib] = sc & 255;
      const d = Math.fround(d16 * sc);
      if (!d) continue;
      for (let i = 0; i < 16; i++) L[16 * ib + i] = Math.max(-32, Math.min(31, nearestInt(x[o + 16 * ib + i] / d))) + 32;
    }
    for (let j = 0, ql = y, qh = y + 128; j < QK; j += 128, ql += 64, qh += 32) {
      for (let l = 0; l < 32; l++) {
        out[ql + l] = (L[j + l] & 15) | ((L[j + l + 64] & 15) << 4);
        out[ql + l + 32] = (L[j + l + 32] & 15) | ((L[j + l + 96] & 15) << 4);
        out[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
      }
    }
  }
  return out;
}

function encode(data: Float32Array, type: number): Uint8Array {
  if (type === GGML.Q8_0) return quantizeQ8_0(data);
  if (type === GGML.Q6_K) return quantizeQ6_K(data);
  if (type === GGML.F32) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (type === GGML.Q4_0) return quantizeQ4_0(data);
  const h = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) h[i] = f32BitsToF16Bits(floatToF32Bits(data[i]));
  return new Uint8Array(h.buffer);
}

/**
 * Writes `out` (a .gguf file) from the HF LLaMA directory `dir`. Written to a temporary sibling and
 * renamed, so a failure leaves no partial file. Returns the file's tensor bytes.
 */
export function writeGguf(dir: string, out: string, weightType: GgufWeightType): { tensor_bytes: number; tensors: number } {
  const hf = readJson(join(dir, 'config.json')) as Record<string, unknown>;
  const num = (k: string, d?: number): number => {
    const v = hf[k] ?? d;
    if (typeof v !== 'number') throw new InputError(`${join(dir, 'config.json')}: missing ${k}`);
    return v;
  };
  if (hf.model_type !== undefined && hf.model_type !== 'llama') throw new InputError(`${dir}: model_type ${String(hf.model_type)} is not llama`);
  const H = num('hidden_size');
  const heads = num('num_attention_heads');
  const kvHeads = num('num_key_value_heads', heads);
  const layers = num('num_hidden_layers');
  const headDim = num('head_dim', H / heads);
  const vocab = num('vocab_size');
  const rope = (hf.rope_parameters ?? {}) as Record<string, unknown>;
  const theta = Number(rope.rope_theta ?? hf.rope_theta ?? 10000);
  const ropeType = rope.rope_type ?? (hf.rope_scaling as Record<string, unknown> | undefined)?.rope_type ?? 'default';
  if (ropeType !== 'default') throw new InputError(`${dir}: rope type ${String(ropeType)} is not written to GGUF (only default rotary)`);

  const src = openHfTensors(dir);
  try {
    const raw = (name: string): { dtype: DType; shape: number[]; data: Uint8Array } => {
      const m = src.info(name);
      const data = new Uint8Array(m.shape.reduce((a, b) => a * b, 1) * (m.dtype === 'float32' ? 4 : 2));
      src.readRows(name, 0, m.shape[0], data, 0);
      return { dtype: m.dtype as DType, shape: m.shape, data };
    };
    const tied = !src.has('lm_head.weight');
    const planned: PlannedTensor[] = [];
    /** `rotaryHeads`: permute the rows of a q/k projection with that many heads. */
    const add = (name: string, hfName: string, type: number, rotaryHeads?: number) => {
      const shape = src.info(hfName).shape;
      const dims = [...shape].reverse();
      const n = shape.reduce((a, b) => a * b, 1);
      // llama-quantize's tensor_type_fallback: Q6_K rows not a multiple of 256 go Q8_0, 32-blocks F16.
      if (type === GGML.Q6_K && dims[0] % 256) type = GGML.Q8_0;
      if ((type === GGML.Q4_0 || type === GGML.Q8_0) && dims[0] % QK4_0) type = GGML.F16;
      const bytes = (n / BLOCK[type][1]) * BLOCK[type][0];
      const cols = shape.length > 1 ? shape[1] : shape[0];
      const read = () => {
        const t = raw(hfName);
        // F16 to F16 is a byte copy (rows permuted as bytes): no float round trip for billions of weights.
        if (type === GGML.F16 && t.dtype === 'float16') return rotaryHeads ? permuteRotary(t.data, shape[0], cols * 2, rotaryHeads) : t.data;
        const w = toFloat32(t);
        return encode(rotaryHeads ? permuteRotary(w, shape[0], cols, rotaryHeads) : w, type);
      };
      planned.push({ name, dims, type, bytes, read });
    };
    const lin = weightType === 'q4_0' ? GGML.Q4_0 : weightType === 'q8_0' ? GGML.Q8_0 : GGML.F16;
    const outType = weightType === 'q4_0' ? GGML.Q6_K : lin;
    add('token_embd.weight', 'model.embed_tokens.weight', tied ? outType : lin);
    for (let l = 0; l < layers; l++) {
      const p = `model.layers.${l}`;
      add(`blk.${l}.attn_norm.weight`, `${p}.input_layernorm.weight`, GGML.F32);
      add(`blk.${l}.attn_q.weight`, `${p}.self_attn.q_proj.weight`, lin, heads);
      add(`blk.${l}.attn_k.weight`, `${p}.self_attn.k_proj.weight`, lin, kvHeads);
      add(`blk.${l}.attn_v.weight`, `${p}.self_attn.v_proj.weight`, lin);
      add(`blk.${l}.attn_output.weight`, `${p}.self_attn.o_proj.weight`, lin);
      add(`blk.${l}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`, GGML.F32);
      add(`blk.${l}.ffn_gate.weight`, `${p}.mlp.gate_proj.weight`, lin);
      add(`blk.${l}.ffn_up.weight`, `${p}.mlp.up_proj.weight`, lin);
      add(`blk.${l}.ffn_down.weight`, `${p}.mlp.down_proj.weight`, lin);
    }
    add('output_norm.weight', 'model.norm.weight', GGML.F32);
    if (!tied) add('output.weight', 'lm_head.weight', outType);

    const kv: [string, Value][] = [
      ['general.architecture', { t: 'str', v: 'llama' }],
      ['general.name', { t: 'str', v: String(hf._name_or_path ?? dir.split('/').filter(Boolean).pop()) }],
      ['general.alignment', { t: 'u32', v: ALIGN }],
      ['general.file_type', { t: 'u32', v: { q4_0: 2, q8_0: 7, f16: 1 }[weightType] }], // LLAMA_FTYPE_MOSTLY_Q4_0 / _Q8_0 / _F16
      ['llama.context_length', { t: 'u32', v: num('max_position_embeddings', 2048) }],
      ['llama.embedding_length', { t: 'u32', v: H }],
      ['llama.block_count', { t: 'u32', v: layers }],
      ['llama.feed_forward_length', { t: 'u32', v: num('intermediate_size') }],
      ['llama.attention.head_count', { t: 'u32', v: heads }],
      ['llama.attention.head_count_kv', { t: 'u32', v: kvHeads }],
      ['llama.attention.key_length', { t: 'u32', v: headDim }],
      ['llama.attention.value_length', { t: 'u32', v: headDim }],
      ['llama.attention.layer_norm_rms_epsilon', { t: 'f32', v: num('rms_norm_eps', 1e-5) }],
      ['llama.rope.freq_base', { t: 'f32', v: theta }],
      ['llama.rope.dimension_count', { t: 'u32', v: headDim }],
      ['llama.vocab_size', { t: 'u32', v: vocab }],
      ...vocabMetadata(dir, vocab, hf),
    ];

    const h = new HeaderWriter();
    h.u32(0x46554747); // "GGUF" little-endian
    h.u32(3);
    h.u64(planned.length);
    h.u64(kv.length);
    for (const [k, v] of kv) { h.str(k); h.value(v); }
    let off = 0;
    for (const t of planned) {
      h.str(t.name);
      h.u32(t.dims.length);
      for (const d of t.dims) h.u64(d);
      h.u32(t.type);
      h.u64(off);
      off += Math.ceil(t.bytes / ALIGN) * ALIGN;
    }
    const head = h.bytes();
    const tmp = `${out}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, head);
      writeSync(fd, new Uint8Array(Math.ceil(head.length / ALIGN) * ALIGN - head.length));
      let total = 0;
      for (const t of planned) {
        const bytes = t.read();
        if (bytes.length !== t.bytes) throw new Error(`${t.name}: encoded ${bytes.length} bytes, planned ${t.bytes}`);
        writeSync(fd, bytes);
        const pad = Math.ceil(t.bytes / ALIGN) * ALIGN - t.bytes;
        if (pad) writeSync(fd, new Uint8Array(pad));
        total += t.bytes;
      }
      closeSync(fd);
      renameSync(tmp, out);
      return { tensor_bytes: total, tensors: planned.length };
    } catch (e) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      throw e;
    }
  } finally {
    src.close();
  }
}
