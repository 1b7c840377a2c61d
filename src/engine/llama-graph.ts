// The ONNX graph(s) of one rank's LLaMA shard.
//
// At tp = 1 the whole model is one graph. At tp > 1 the graph is cut after every row-parallel linear
// (attention dense, MLP proj) and after a vocab-parallel embedding: each piece ("segment") ends with
// its partial sum `partial` (and the residual stream `residual`), the ranks all-reduce `partial`, and
// the next segment starts from both. Values crossing segments, and the logits, are float32 whatever
// the engine dtype, so the all-reduce sums in float32.
//
// Segment inputs (each segment declares only those it uses):
//   input_ids int64 [batch, seq]; seqlens_k int32 [batch] (total length - 1 per row, right padding);
//   total_sequence_length int32 []; past.L.key / past.L.value [batch, kv_heads_per_rank, past, head];
//   logit_positions int64 [batch, npos] (which positions get logits); partial_in, residual_in float32
// (the previous segment's partial, all-reduced, and residual).
// Outputs: present.L.key / present.L.value, partial / residual at cuts, logits float32
// [batch, npos, vocab_per_rank]; with calibration, calib.<linear prefix> (the linear's input).
//
// Pipeline parallelism: a rank builds only its stage's layers (L counts from 0 within the stage, as in
// its checkpoint file). A stage after the first starts from `hidden_in` float32 [batch, seq, hidden]
// instead of the embedding; a stage before the last ends with `hidden` (the residual stream after its
// last layer) instead of ln_f + lm_head. That one vector per token is all that crosses a stage boundary.

import type { Tensor, Weights } from '../core/tensor.js';
import type { PretrainedConfig } from '../core/config.js';
import { InputError } from '../core/errors.js';
import { weightOnlyShapeRefusal } from './nbits-shape.js';
import type { BuildConfig } from './build-config.js';
import { fromFloat32 } from './dtype.js';
import { type DeferredTensor, engineWeight } from './weight-convert.js';
import { Graph, MS } from './graph.js';
import { emitLinear, emitLmHead, requireTensor } from './linear.js';
import { isInt8KvCache, kvPastToFloat, kvPresentToInt8 } from './onnx-kv-cache.js';
import type { WeightFile } from './weight-file.js';
import { Mapping } from '../sharding/mapping.js';

export interface RankShape {
  tp: number;
  /** The rank's place in its tensor-parallel group (tp_rank of TensorRT-LLM's Mapping). */
  rank: number;
  /** Pipeline stage: its layer count, and whether it holds the embedding (first) and ln_f/lm_head (last). */
  layers: number;
  first: boolean;
  last: boolean;
  headsPerRank: number;
  kvHeadsPerRank: number;
  headSize: number;
  vocabPerRank: number;
}

/** `rank` is the world rank; at pp > 1 it names both the stage and the place in the stage (sharding/mapping.ts). */
export function rankShape(config: PretrainedConfig, rank: number): RankShape {
  const tp = config.mapping.tp_size;
  if (config.num_attention_heads % tp) throw new Error(`num_attention_heads ${config.num_attention_heads} is not divisible by tp ${tp}`);
  const m = new Mapping(config.mapping, rank);
  return {
    tp,
    rank: m.tpRank,
    layers: m.ppLayers(config.num_hidden_layers).length,
    first: m.isFirstPpRank(),
    last: m.isLastPpRank(),
    headsPerRank: config.num_attention_heads / tp,
    kvHeadsPerRank: Math.max(1, config.num_key_value_heads / tp),
    headSize: config.head_size,
    vocabPerRank: Math.ceil(config.vocab_size / tp),
  };
}

/** HF's inverse frequencies (computed in float32 as transformers does), with its rope scaling types. */
export function ropeInvFreq(config: PretrainedConfig): Float32Array {
  const d = config.head_size;
  const f = Math.fround;
  const inv = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) inv[i] = f(1 / f(config.rotary_base ** f((2 * i) / d)));
  const s = config.rotary_scaling;
  if (!s || s.type === 'default') return inv;
  if (s.type === 'linear') return inv.map((x) => f(x / s.factor));
  if (s.type === 'llama3') {
    const low = s.low_freq_factor ?? 1;
    const high = s.high_freq_factor ?? 4;
    const orig = s.original_max_position_embeddings ?? 8192;
    const lowWl = orig / low;
    const highWl = orig / high;
    return inv.map((x) => {
      const wl = (2 * Math.PI) / x;
      if (wl < highWl) return x;
      if (wl > lowWl) return f(x / s.factor);
      const smooth = (orig / wl - low) / (high - low);
      return f((1 - smooth) * (x / s.factor) + smooth * x);
    });
  }
  throw new Error(`rotary scaling type '${s.type}' is not supported by the engine builder`);
}

function cosSinCaches(config: PretrainedConfig, maxSeq: number, dtype: 'float32' | 'float16'): { cos: Tensor; sin: Tensor } {
  const inv = ropeInvFreq(config);
  const half = inv.length;
  const cos = new Float32Array(maxSeq * half);
  const sin = new Float32Array(maxSeq * half);
  for (let p = 0; p < maxSeq; p++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(p * inv[i]);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos: fromFloat32(cos, [maxSeq, half], dtype), sin: fromFloat32(sin, [maxSeq, half], dtype) };
}

function floatWeight(weights: Weights, name: string, dtype: 'float32' | 'float16'): DeferredTensor {
  return engineWeight(requireTensor(weights, name), dtype, `tensor ${name}`);
}

/** Builds the segment graphs of one rank. Weights go to `wf`; returns the graphs in execution order. */
/**
 * Why onnxruntime could not run an engine of this head size, or undefined. Its GroupQueryAttention with
 * rotary caches (do_rotary, as built here) takes head sizes that are multiples of 16 only
 * (contrib_ops/cpu/bert/group_query_attention_helper.h, CheckInputs: "head_size shall be a multiple of
 * 16"): refused at build for the CPU rather than at the first forward. GPU builds are left to the WGSL
 * kernels, which take any even head size (wgsl/runner.ts).
 */
export function ortHeadSizeRefusal(config: PretrainedConfig, device: BuildConfig['device']): string | undefined {
  if (device !== 'cpu' || config.head_size % 16 === 0) return undefined;
  return `head size ${config.head_size} (hidden ${config.hidden_size} / ${config.num_attention_heads} heads): onnxruntime's GroupQueryAttention with rotary caches takes multiples of 16, so no CPU engine can run it; build with --device gpu for tprun's WGSL kernels`;
}

export function buildLlamaSegments(config: PretrainedConfig, rank: number, weights: Weights, bc: BuildConfig, wf: WeightFile, onLayer?: () => void): Graph[] {
  const refusal = ortHeadSizeRefusal(config, bc.device);
  if (refusal) throw new InputError(refusal);
  // A checkpoint quantized elsewhere (or a world's --model build) meets it here; `build --model` before ranks start.
  const shape = weightOnlyShapeRefusal(config);
  if (shape) throw new InputError(`quant_algo ${config.quantization?.quant_algo}: ${shape}; build from the unquantized model`);
  const sh = rankShape(config, rank);
  const dt = bc.dtype;
  const H = config.hidden_size;
  const eps = { float: config.norm_epsilon };
  const quant = config.quantization ?? { quant_algo: null, kv_cache_quant_algo: null };
  const segments: Graph[] = [];
  let g = new Graph(`rank${rank}_seg0`, dt, wf);
  segments.push(g);
  const used = new Set<string>();

  // Shared inputs are declared lazily so that each segment lists only what it reads.
  const shared = (name: string): string => {
    if (used.has(`${segments.length}:${name}`)) return name;
    used.add(`${segments.length}:${name}`);
    if (name === 'input_ids') return g.input(name, 'int64', ['batch', 'seq']);
    if (name === 'seqlens_k') return g.input(name, 'int32', ['batch']);
    if (name === 'total_sequence_length') return g.input(name, 'int32', []);
    if (name === 'logit_positions') return g.input(name, 'int64', ['batch', 'npos']);
    throw new Error(name);
  };
  const caches = cosSinCaches(config, bc.max_seq_len, dt);

  const toF32 = (v: string) => (dt === 'float32' ? v : g.op('Cast', [v], { to: 1 }));
  const fromF32 = (v: string) => (dt === 'float32' ? v : g.op('Cast', [v], { to: 10 }));

  // The residual stream and a pending partial sum (added by the next Skip*Norm).
  let resid: string | null = null;
  let pending: string | null = null;

  const cut = () => {
    if (sh.tp === 1) return;
    if (pending) g.output(renameTo(g, toF32(pending), 'partial'), 'float32', ['batch', 'seq', H]);
    if (resid) g.output(renameTo(g, toF32(resid), 'residual'), 'float32', ['batch', 'seq', H]);
    const hadPending = pending !== null;
    const hadResid = resid !== null;
    g = new Graph(`rank${rank}_seg${segments.length}`, dt, wf);
    segments.push(g);
    pending = hadPending ? fromF32(g.input('partial_in', 'float32', ['batch', 'seq', H])) : null;
    resid = hadResid ? fromF32(g.input('residual_in', 'float32', ['batch', 'seq', H])) : null;
    if (!resid) { resid = pending; pending = null; }
  };

  const calib = (prefix: string, input: string) => {
    if (bc.calibration) g.output(renameTo(g, g.op('Identity', [toF32(input)]), `calib.${prefix}`), 'float32', ['batch', 'seq', 'in_features']);
  };
  const linear = (input: string, prefix: string) => {
    calib(prefix, input);
    return emitLinear(g, input, prefix, weights, quant, bc);
  };

  const norm = (weightName: string): string => {
    const w = g.weight(weightName, floatWeight(weights, weightName, dt));
    if (pending) {
      const sum = g.fresh('resid');
      const [h] = g.node('SkipSimplifiedLayerNormalization', [pending, resid!, w], [g.fresh('normed'), '', '', sum], { epsilon: eps }, MS);
      resid = sum;
      pending = null;
      return h;
    }
    return g.op('SimplifiedLayerNormalization', [resid!, w], { epsilon: eps, axis: -1, stash_type: 1 });
  };

  // Embedding: replicated, or vocab-parallel (rows [r*Vr, (r+1)*Vr) on rank r, zero elsewhere, then all-reduced).
  // Later pipeline stages start from the previous stage's hidden state instead.
  if (!sh.first) resid = fromF32(g.input('hidden_in', 'float32', ['batch', 'seq', H]));
  else {
    const emb = requireTensor(weights, 'transformer.vocab_embedding.weight');
    const embW = g.weight('transformer.vocab_embedding.weight', engineWeight(emb, dt, 'tensor transformer.vocab_embedding.weight'));
    const ids = shared('input_ids');
    if (config.use_parallel_embedding && sh.tp > 1) {
      if (config.embedding_sharding_dim !== 0) throw new Error('vocab-parallel embedding: only embedding_sharding_dim 0 is supported');
      const vr = emb.shape[0];
      const local = g.op('Sub', [ids, g.int64s('emb_offset', [sh.rank * vr], [])]);
      const inRange = g.op('And', [
        g.op('GreaterOrEqual', [local, g.int64s('zero', [0], [])]),
        g.op('Less', [local, g.int64s('emb_rows', [vr], [])]),
      ]);
      const safe = g.op('Where', [inRange, local, g.int64s('zero', [0], [])]);
      const rows = g.op('Gather', [embW, safe], { axis: 0 });
      const mask = g.op('Unsqueeze', [g.op('Cast', [inRange], { to: dt === 'float32' ? 1 : 10 }), g.int64s('axes', [-1])]);
      pending = g.op('Mul', [rows, mask]);
      cut();
    } else {
      resid = g.op('Gather', [embW, ids], { axis: 0 });
    }
  }

  const cosName = 'rotary.cos_cache';
  const sinName = 'rotary.sin_cache';
  const kvDims = ['batch', sh.kvHeadsPerRank, 'past', sh.headSize];
  for (let l = 0; l < sh.layers; l++) {
    const p = `transformer.layers.${l}`;
    const h = norm(`${p}.input_layernorm.weight`);
    const qkv = linear(h, `${p}.attention.qkv`);
    const kvq = isInt8KvCache(quant);
    const kvDt = kvq ? 'int8' : dt;
    const pk = g.input(`past.${l}.key`, kvDt, kvDims);
    const pv = g.input(`past.${l}.value`, kvDt, kvDims);
    const [attn, presK, presV] = g.node('GroupQueryAttention', [
      qkv, '', '', kvq ? kvPastToFloat(g, pk, p, weights) : pk, kvq ? kvPastToFloat(g, pv, p, weights) : pv, shared('seqlens_k'), shared('total_sequence_length'),
      g.weight(cosName, caches.cos), g.weight(sinName, caches.sin),
    ], [g.fresh('attn'), kvq ? g.fresh('present_key_f') : `present.${l}.key`, kvq ? g.fresh('present_value_f') : `present.${l}.value`], {
      num_heads: sh.headsPerRank,
      kv_num_heads: sh.kvHeadsPerRank,
      scale: { float: 1 / Math.sqrt(sh.headSize) },
      do_rotary: 1,
      rotary_interleaved: 0,
      local_window_size: -1,
    }, MS);
    if (kvq) {
      kvPresentToInt8(g, presK, `present.${l}.key`, p, weights);
      kvPresentToInt8(g, presV, `present.${l}.value`, p, weights);
    }
    g.output(`present.${l}.key`, kvDt, ['batch', sh.kvHeadsPerRank, 'present', sh.headSize]);
    g.output(`present.${l}.value`, kvDt, ['batch', sh.kvHeadsPerRank, 'present', sh.headSize]);
    pending = linear(attn, `${p}.attention.dense`);
    cut();

    const h2 = norm(`${p}.post_layernorm.weight`);
    const gateAct = linear(h2, `${p}.mlp.fc`);
    const up = linear(h2, `${p}.mlp.gate`);
    const silu = g.op('Mul', [gateAct, g.op('Sigmoid', [gateAct])]);
    pending = linear(g.op('Mul', [silu, up]), `${p}.mlp.proj`);
    cut();
    onLayer?.();
  }

  if (!sh.last) {
    // After the last layer's all-reduce: the residual stream plus the pending MLP output.
    const hidden = pending ? g.op('Add', [pending, resid!]) : resid!;
    g.output(renameTo(g, g.op('Identity', [toF32(hidden)]), 'hidden'), 'float32', ['batch', 'seq', H]);
    return segments;
  }
  const hf = norm('transformer.ln_f.weight');
  const pos = g.op('Unsqueeze', [shared('logit_positions'), g.int64s('axes', [2])]);
  const picked = g.op('GatherND', [hf, pos], { batch_dims: 1 });
  calib('lm_head', picked);
  const logits = emitLmHead(g, picked, 'lm_head', weights, quant, bc);
  g.output(renameTo(g, logits.dtype === 'float32' ? logits.value : toF32(logits.value), 'logits'), 'float32', ['batch', 'npos', sh.vocabPerRank]);
  return segments;
}

// Graph outputs need fixed names; an Identity gives any value the name the runtime expects.
function renameTo(g: Graph, value: string, name: string): string {
  g.node('Identity', [value], [name]);
  return name;
}
