// Which models a per-channel weight-only engine (W8A16, W4A16) cannot hold: every linear of such an engine
// is one onnxruntime MatMulNBits whose block runs along the input features K, and its block size must be a
// power of two of at least 16 (onnxruntime contrib_ops/cpu/quantization/matmul_nbits.cc, the MatMulNBits
// constructor's check on block_size); ./onnx-linear.ts's rowBlock picks the largest that divides K. A K
// (per rank: row-parallel linears are cut along K) that no such block divides cannot be built, and is
// refused before any rank starts rather than by each rank's graph builder.
// Group-wise int4 (W4A16_AWQ, int4_wo's layout) is ./distribute.ts's checkGroups' (--group-size).
// The lm_head is not judged here: one that cannot be blocked stays float (../engine/build-config.ts's
// lmHeadBlockFor).
import type { PretrainedConfig } from '../core/config.js';
import { kPerRank } from '../sharding/tllm-layout.js';

const PER_CHANNEL_NBITS = new Set(['W8A16', 'W4A16']);
const MIN_BLOCK = 16;

type ShapeOf = Pick<PretrainedConfig, 'hidden_size' | 'intermediate_size' | 'num_attention_heads' | 'head_size'> & {
  mapping: { tp_size: number };
  quantization?: { quant_algo?: string | null } | null;
};

/**
 * Why a model of this shape cannot be built with its quant_algo's per-channel MatMulNBits linears at its
 * tp_size (the first linear, in TensorRT-LLM's names, whose K per rank no block of 16 divides), or undefined.
 * `otherTpHint` says how the user picks another tp_size, where one would do.
 */
export function weightOnlyShapeRefusal(c: ShapeOf, otherTpHint = 'a --tp whose share is a multiple of 16 avoids it'): string | undefined {
  if (!PER_CHANNEL_NBITS.has(c.quantization?.quant_algo ?? '')) return undefined;
  const tp = c.mapping.tp_size;
  // mlp.gate shares mlp.fc's K, so it never fails first.
  for (const { linear, k, perRank, rowParallel } of kPerRank(c, tp)) {
    if (perRank % MIN_BLOCK === 0) continue;
    // Only a row-parallel linear's share depends on --tp; say so where a smaller one would do.
    const otherTp = rowParallel && k % MIN_BLOCK === 0 ? `; ${otherTpHint}` : '';
    return `${linear} has ${perRank} input features per rank at tp=${tp}, not a multiple of 16 (onnxruntime's MatMulNBits blocks${otherTp})`;
  }
  return undefined;
}
