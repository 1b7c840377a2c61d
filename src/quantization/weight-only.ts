// Per-channel weight-only quantization of TensorRT-LLM's W8A16 / W4A16 checkpoints. Those hold float
// weights (the portable form, tllm-layout.ts), which TensorRT-LLM's loader quantizes on each rank from
// that rank's own shard: models/modeling_utils.py preprocess_weights → convert_utils.py
// weight_only_quantize_dict → torch.ops.trtllm.symmetric_quantize_last_axis_of_batched_matrix (symmetric,
// one scale per output channel, amax/127 or amax/7). tprun does the same arithmetic on the same shards,
// but only on rank 0 (distribute.ts), which sends every rank its result; the engine builder
// (onnx-linear.ts) takes it as is. Row-parallel linears are quantized per shard, as TensorRT-LLM does,
// so an output channel's scale is the amax over the rank's slice of K, not over the whole row.

import type { Tensor, Weights } from '../core/tensor.js';
import { nowUs } from '../util/events.js';
import { traceSince } from '../util/trace.js';
import { bytesTensor, f32Tensor, toFloat32 } from './tensor-f32.js';
import { quantizeInt4Grouped, quantizeInt8PerChannel, unpackInt4 } from './weights.js';

/** quant_algo → bits of the weight-only schemes whose checkpoints hold float weights. */
export const WEIGHT_ONLY_BITS: Readonly<Record<string, 8 | 4>> = { W8A16: 8, W4A16: 4 };

const LAYER_LINEAR_WEIGHT = /^transformer\.layers\.\d+\.(?:attention\.(?:qkv|dense)|mlp\.(?:fc|gate|proj))\.weight$/;

export function weightOnlyBits(quantAlgo: string | null | undefined): 8 | 4 | undefined {
  return quantAlgo ? WEIGHT_ONLY_BITS[quantAlgo] : undefined;
}

/**
 * One linear's float weight [N, K] → signed q [N, K] (int8 range, or int4's [-8, 7] for 4 bits) and one
 * scale per output channel. Every call is a `quant.weight_only` trace span: the test that only rank 0
 * quantizes counts them per rank.
 */
export function quantizeWeightOnlyLinear(w: Tensor, bits: 8 | 4, name: string): { q: Int8Array; scale: Float32Array } {
  const t0 = nowUs();
  const [n, k] = w.shape;
  const wf = toFloat32(w, name);
  let out: { q: Int8Array; scale: Float32Array };
  if (bits === 8) out = quantizeInt8PerChannel(wf, n, k);
  else {
    // One group spanning the whole row: TensorRT-LLM's W4A16 is per channel.
    const g = quantizeInt4Grouped(wf, n, k, k);
    out = { q: unpackInt4(g.packed, n * k), scale: g.scale };
  }
  traceSince('quant.weight_only', t0, { tensor: name, bits });
  return out;
}

/**
 * A rank's shard with every decoder linear's float weight replaced by its quantized form as the engine
 * takes it: `weight` int8 [N, K] (row-major, not TensorRT-LLM's kernel interleave) and `per_channel_scale`
 * float32 [N] — the two tensors TensorRT-LLM's loader leaves for these algos. Other tensors are shared.
 */
export function quantizeWeightOnlyShard(shard: Weights, bits: 8 | 4): Weights {
  const out: Weights = new Map();
  for (const [name, t] of shard) {
    if (!LAYER_LINEAR_WEIGHT.test(name) || t.dtype === 'int8') { out.set(name, t); continue; }
    const { q, scale } = quantizeWeightOnlyLinear(t, bits, name);
    out.set(name, bytesTensor('int8', t.shape, q));
    out.set(name.replace(/weight$/, 'per_channel_scale'), f32Tensor(scale, [t.shape[0]]));
  }
  return out;
}
