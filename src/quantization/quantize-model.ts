// Quantizes a whole (tp=1) model's weights into the checkpoint layout CONTRACTS.md fixes; sharding the
// result with the sharding table then gives every rank its part. Embeddings, norms and lm_head stay float.

import type { Tensor, Weights } from '../checkpoint/tensor.js';
import type { PretrainedConfig, QuantConfig } from '../model/config.js';
import { LAYER_LINEARS, TRTLLM_QUANT_ALGO, type QuantOptions } from './algorithms.js';
import { awqQuantize } from './awq.js';
import type { CalibrationStats } from './calib-stats.js';
import { FP8_E4M3_MAX, quantizeFp8 } from './fp8.js';
import { reciprocal, scaleColumns, smoothingFactors } from './smoothquant.js';
import { bytesTensor, f32Tensor, scalarF32, toFloat32 } from './tensor-f32.js';
import { quantizeInt4Grouped, quantizeInt8PerChannel } from './weights.js';

export const INT8_KV_MAX = 127;

export function quantConfigFor(o: QuantOptions): QuantConfig {
  const q: QuantConfig = {
    quant_algo: o.algo ? TRTLLM_QUANT_ALGO[o.algo] : null,
    kv_cache_quant_algo: o.kvCache === 'int8' ? 'INT8' : null,
  };
  if (o.algo === 'int4_wo' || o.algo === 'int4_awq') {
    q.group_size = o.groupSize ?? 128;
    q.has_zero_point = false;
  }
  if (o.algo === 'int4_awq' || o.algo === 'w8a8_sq') q.pre_quant_scale = true;
  if (o.algo === 'w8a8_sq' || o.algo === 'w8a8') {
    // Not a TensorRT-LLM field: how the engine quantizes activations (per token at run time, or with the
    // calibrated activation_scaling_factor); TensorRT-LLM encodes it in quant_algo, which we also do.
    (q as QuantConfig & { activation_quant?: string }).activation_quant = o.sqActivations ?? 'per-token';
    if (o.sqActivations === 'per-tensor') q.quant_algo = 'W8A8_SQ_PER_CHANNEL';
  }
  return q;
}

export interface QuantReport {
  linear: string;
  detail: Record<string, number>;
}

/** Returns new weights (float tensors not quantized are shared, not copied) and a per-linear report. */
export async function quantizeWeights(
  config: PretrainedConfig, weights: Weights, o: QuantOptions, stats?: CalibrationStats,
): Promise<{ weights: Weights; quantization: QuantConfig; report: QuantReport[] }> {
  const out: Weights = new Map(weights);
  const report: QuantReport[] = [];
  const g = o.groupSize ?? 128;
  const statsFor = (prefix: string) => {
    const s = stats?.linears.get(prefix);
    if (!s) throw new Error(`no calibration activations for ${prefix} (calibration did not run?)`);
    return s;
  };
  for (let l = 0; l < config.num_hidden_layers; l++) {
    for (const lin of o.algo ? LAYER_LINEARS : []) {
      const prefix = `transformer.layers.${l}.${lin}`;
      const name = `${prefix}.weight`;
      const t = weights.get(name);
      if (!t) throw new Error(`missing tensor ${name}`);
      if (t.shape.length !== 2) throw new Error(`${name}: expected a 2-D weight, got shape [${t.shape}]`);
      const [n, k] = t.shape;
      const w = toFloat32(t, name);
      const put = (suffix: string, v: Tensor) => out.set(`${prefix}.${suffix}`, v);
      switch (o.algo) {
        case 'int8_wo': {
          const q = quantizeInt8PerChannel(w, n, k);
          put('weight', bytesTensor('int8', [n, k], q.q));
          put('per_channel_scale', f32Tensor(q.scale, [n]));
          break;
        }
        case 'int4_wo': {
          if (k % g) throw new Error(`${name}: K=${k} is not a multiple of --group-size ${g}`);
          const q = quantizeInt4Grouped(w, n, k, g);
          put('weight', bytesTensor('uint8', [n, k / 2], q.packed));
          put('weights_scaling_factor', f32Tensor(q.scale, [n, k / g]));
          break;
        }
        case 'int4_awq': {
          if (k % g) throw new Error(`${name}: K=${k} is not a multiple of --group-size ${g}`);
          const st = statsFor(prefix);
          const r = await awqQuantize(w, n, k, g, st.meanAbs(), st.sample(), { grid: o.awqGrid, clipSearch: o.awqClip ?? true });
          put('weight', bytesTensor('uint8', [n, k / 2], r.packed));
          put('weights_scaling_factor', f32Tensor(r.scale, [n, k / g]));
          put('prequant_scaling_factor', f32Tensor(reciprocal(r.s), [k]));
          report.push({ linear: prefix, detail: { alpha: r.alpha, error: r.error, rtn_error: r.rtnError } });
          break;
        }
        case 'w8a8_sq':
        case 'w8a8': {
          const st = statsFor(prefix);
          const s = o.algo === 'w8a8_sq' ? smoothingFactors(st.absmax, w, n, k, o.smoothAlpha ?? 0.5) : new Float32Array(k).fill(1);
          const q = quantizeInt8PerChannel(scaleColumns(w, n, k, s), n, k);
          let xmax = 0;
          for (let c = 0; c < k; c++) xmax = Math.max(xmax, st.absmax[c] / s[c]);
          put('weight', bytesTensor('int8', [n, k], q.q));
          put('per_channel_scale', f32Tensor(q.scale, [n]));
          if (o.algo === 'w8a8_sq') put('prequant_scaling_factor', f32Tensor(reciprocal(s), [k]));
          put('activation_scaling_factor', scalarF32(Math.fround(Math.max(xmax, 1e-8) / 127)));
          break;
        }
        case 'fp8': {
          const st = statsFor(prefix);
          const q = quantizeFp8(w);
          put('weight', bytesTensor('float8_e4m3fn', [n, k], q.codes));
          put('weights_scaling_factor', scalarF32(q.scale));
          put('activation_scaling_factor', scalarF32(Math.fround(Math.max(st.tensorAbsmax(), 1e-8) / FP8_E4M3_MAX)));
          break;
        }
      }
    }
    if (o.kvCache === 'int8') {
      const amax = stats?.kvAbsmax.get(l);
      if (amax === undefined) throw new Error(`no calibrated KV-cache range for layer ${l}`);
      out.set(`transformer.layers.${l}.attention.kv_cache_scaling_factor`, scalarF32(Math.fround(Math.max(amax, 1e-8) / INT8_KV_MAX)));
    }
  }
  return { weights: out, quantization: quantConfigFor(o), report };
}
