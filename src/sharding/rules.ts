// THE table of tensor-parallel rules for LLaMA in TensorRT-LLM names. Every split and every gather in
// the project (convert, reshard, quantized shards sent by rank 0) goes through `ruleFor` + `selection`.
import { InputError } from '../core/errors.js';
import { TOLERATED_ROLES, axesOfSpec, specOf } from './tllm-layout.js';

export type RuleKind =
  | 'replicated'
  | 'column'      // split the output features N (dim 0 of the weight)
  | 'row'         // split the input features K (dim 1 of the weight)
  | 'vocab'       // split N = vocabulary, zero rows pad it to ceil(vocab/tp)*tp
  | 'qkv';        // fused [q; k; v] split by heads; KV heads replicated when kv < tp

/** What a rank needs to know to cut or join tensors. */
export interface ShardContext {
  tp: number;
  numHeads: number;
  numKvHeads: number;
  headSize: number;
  vocabSize: number;
  /** Vocab-parallel embedding (TensorRT-LLM's use_parallel_embedding). */
  parallelEmbedding: boolean;
  embeddingShardingDim: 0 | 1;
  /** config.quantization: quantized companions take their axes from ./tllm-layout.ts. */
  quantAlgo?: string | null;
  kvCacheQuantAlgo?: string | null;
}

interface BaseRule {
  pattern: RegExp;
  kind: (ctx: ShardContext) => RuleKind;
}

// Tensor names are `<base>.<role>`; the base decides the parallel style, the role which axes are N and K.
const RULES: BaseRule[] = [
  { pattern: /^transformer\.vocab_embedding$/, kind: (c) => (!c.parallelEmbedding ? 'replicated' : c.embeddingShardingDim === 0 ? 'vocab' : 'row') },
  { pattern: /^transformer\.layers\.\d+\.(input_layernorm|post_layernorm)$/, kind: () => 'replicated' },
  { pattern: /^transformer\.ln_f$/, kind: () => 'replicated' },
  { pattern: /^transformer\.layers\.\d+\.attention\.qkv$/, kind: () => 'qkv' },
  { pattern: /^transformer\.layers\.\d+\.attention\.dense$/, kind: () => 'row' },
  { pattern: /^transformer\.layers\.\d+\.mlp\.(fc|gate)$/, kind: () => 'column' },
  { pattern: /^transformer\.layers\.\d+\.mlp\.proj$/, kind: () => 'row' },
  { pattern: /^lm_head$/, kind: () => 'vocab' },
  // INT8 KV cache scale lives on the attention module itself.
  { pattern: /^transformer\.layers\.\d+\.attention$/, kind: () => 'replicated' },
];

/**
 * Which axis of a tensor with this role carries N (output features) and which carries K (input);
 * packN: N indices per stored index (int4 packed two output rows per byte).
 */
interface Axes { n?: number; k?: number; packN?: number }

function roleAxes(base: string, role: string, rank: number, name: string, ctx: ShardContext): Axes {
  // Quantized companions: the one layout table says which axis is which (shapes such as (1, N) or [1]
  // are only unambiguous knowing the quant_algo).
  const spec = specOf(base, role, ctx.quantAlgo, ctx.kvCacheQuantAlgo);
  if (spec && spec.shape.length === rank) return axesOfSpec(spec);
  switch (role) {
    case 'weight':
      // 1-D weights are norms (replicated); 2-D are [N, K] or packed int4 [N, K/2].
      return rank === 2 ? { n: 0, k: 1 } : rank === 1 ? { n: 0 } : {};
    case 'bias':
    case 'per_channel_scale':
      return rank === 1 ? { n: 0 } : rank === 2 ? { n: 1 } : {};
    case 'smoother':
      return rank === 2 ? { k: 1 } : rank === 1 ? { k: 0 } : {};
    case 'weights_scaling_factor':
      // [N, K/g] group-wise; [] per-tensor FP8; [N] per-channel written under this name by some tools.
      return rank === 2 ? { n: 0, k: 1 } : rank === 1 ? { n: 0 } : {};
    case 'prequant_scaling_factor':
      return rank === 1 ? { k: 0 } : {};
    case 'activation_scaling_factor':
    case 'kv_cache_scaling_factor':
    case 'output_scaling_factor':
    case 'weights_scaling_factor_2':
    case 'scale_to_int':
    case 'act_scale':
    case 'quantization_scaling_factor':
      // TensorRT-LLM writes these as shape [1] (or (1, 1)); tprun once wrote 0-d.
      return {};
    default:
      if (TOLERATED_ROLES.has(role)) return {};
      throw new InputError(`tensor ${name}: no sharding rule for role "${role}"`);
  }
}

export interface Rule {
  name: string;
  kind: RuleKind;
  axes: Axes;
}

export function ruleFor(name: string, ndim: number, ctx: ShardContext): Rule {
  const dot = name.lastIndexOf('.');
  const base = dot < 0 ? name : name.slice(0, dot);
  const role = dot < 0 ? '' : name.slice(dot + 1);
  const r = RULES.find((x) => x.pattern.test(base));
  if (!r) throw new InputError(`tensor ${name}: no sharding rule (not a LLaMA tensor in TensorRT-LLM naming)`);
  let kind = r.kind(ctx);
  const axes = roleAxes(base, role, ndim, name, ctx);
  // 1-D norm weights and scalars have nothing to cut.
  if ((kind === 'row' && axes.k === undefined) || (kind !== 'row' && kind !== 'replicated' && axes.n === undefined)) {
    kind = 'replicated';
  }
  return { name, kind, axes };
}

/** A run of indices along one axis, or a run of zero padding. */
export type Piece = { start: number; end: number } | { zeros: number };

export interface Selection {
  /** Axis of the tensor being cut; -1 for replicated (the whole tensor). */
  axis: number;
  pieces: Piece[];
  /** Length of that axis in the shard. */
  length: number;
}

function even(len: number, tp: number, rank: number, name: string, what: string): Piece[] {
  if (len % tp !== 0) throw new InputError(`tensor ${name}: ${what} ${len} does not divide by tp=${tp}`);
  const n = len / tp;
  return [{ start: rank * n, end: (rank + 1) * n }];
}

export function checkHeads(ctx: ShardContext): void {
  const { tp, numHeads, numKvHeads } = ctx;
  if (numHeads % tp !== 0) {
    throw new InputError(`--tp ${tp} does not divide num_attention_heads=${numHeads}`);
  }
  if (numKvHeads % tp !== 0 && tp % numKvHeads !== 0) {
    throw new InputError(`--tp ${tp} and num_key_value_heads=${numKvHeads}: one must divide the other`);
  }
}

/** KV heads [first, first+count) held by a rank (count is 1 and the head replicated when kv < tp). */
export function kvHeadsOf(ctx: ShardContext, rank: number): { first: number; count: number } {
  const { tp, numKvHeads: kv } = ctx;
  if (kv >= tp) return { first: (rank * kv) / tp, count: kv / tp };
  return { first: Math.floor((rank * kv) / tp), count: 1 };
}

/** Which slices of the full tensor (of shape `shape`) rank `rank` holds. */
export function selection(rule: Rule, shape: readonly number[], ctx: ShardContext, rank: number): Selection {
  const { tp } = ctx;
  const { name, kind, axes } = rule;
  if (kind === 'replicated' || tp === 1) {
    const len = shape.length ? shape[0] : 1;
    return { axis: -1, pieces: [{ start: 0, end: len }], length: len };
  }
  if (kind === 'row') {
    const k = axes.k!;
    const pieces = even(shape[k], tp, rank, name, `dim ${k} (input features; int4 bytes / scale groups must stay whole)`);
    return { axis: k, pieces, length: shape[k] / tp };
  }
  const n = axes.n!;
  const pack = axes.packN ?? 1;
  if (pack > 1) {
    // Packed rows: cut in output-feature units, then map to stored indices (cuts must not split a byte).
    const logical = selection({ ...rule, axes: { ...axes, packN: 1 } }, shape.map((d, i) => (i === n ? d * pack : d)), ctx, rank);
    const pieces = logical.pieces.map((p) => {
      const ends = 'zeros' in p ? [p.zeros] : [p.start, p.end];
      if (ends.some((e) => e % pack)) throw new InputError(`tensor ${name}: a tp=${tp} cut at output feature ${ends.find((e) => e % pack)} splits a byte of ${pack} packed rows`);
      return 'zeros' in p ? { zeros: p.zeros / pack } : { start: p.start / pack, end: p.end / pack };
    });
    return { axis: n, pieces, length: logical.length / pack };
  }
  const len = shape[n];
  if (kind === 'column') return { axis: n, pieces: even(len, tp, rank, name, `dim ${n} (output features)`), length: len / tp };
  if (kind === 'vocab') {
    const per = Math.ceil(len / tp);
    const start = Math.min(len, rank * per);
    const end = Math.min(len, start + per);
    const pieces: Piece[] = [];
    if (end > start) pieces.push({ start, end });
    if (per - (end - start) > 0) pieces.push({ zeros: per - (end - start) });
    return { axis: n, pieces, length: per };
  }
  // qkv
  checkHeads(ctx);
  const { numHeads: nh, numKvHeads: kv, headSize: hs } = ctx;
  if (len !== (nh + 2 * kv) * hs) {
    throw new InputError(`tensor ${name}: dim ${n} is ${len}, expected (heads ${nh} + 2 × kv heads ${kv}) × head_size ${hs} = ${(nh + 2 * kv) * hs}`);
  }
  const qh = nh / tp;
  const { first, count } = kvHeadsOf(ctx, rank);
  const pieces: Piece[] = [
    { start: rank * qh * hs, end: (rank + 1) * qh * hs },
    { start: (nh + first) * hs, end: (nh + first + count) * hs },
    { start: (nh + kv + first) * hs, end: (nh + kv + first + count) * hs },
  ];
  return { axis: n, pieces, length: (qh + 2 * count) * hs };
}

export function shardShape(shape: readonly number[], sel: Selection): number[] {
  if (sel.axis < 0) return [...shape];
  const s = [...shape];
  s[sel.axis] = sel.length;
  return s;
}

export function contextFromConfig(c: {
  num_attention_heads: number; num_key_value_heads: number; head_size: number; vocab_size: number;
  use_parallel_embedding?: boolean; embedding_sharding_dim?: 0 | 1; mapping: { tp_size: number };
  quantization?: { quant_algo?: string | null; kv_cache_quant_algo?: string | null };
}): ShardContext {
  return {
    tp: c.mapping.tp_size,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads,
    headSize: c.head_size,
    vocabSize: c.vocab_size,
    parallelEmbedding: !!c.use_parallel_embedding,
    embeddingShardingDim: c.embedding_sharding_dim ?? 0,
    quantAlgo: c.quantization?.quant_algo ?? null,
    kvCacheQuantAlgo: c.quantization?.kv_cache_quant_algo ?? null,
  };
}
