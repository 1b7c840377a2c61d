// Quantizes a whole (tp=1) model's weights into TensorRT-LLM's checkpoint layout, tensor for tensor as
// src/sharding/tllm-layout.ts fixes it; sharding the result with the sharding table then gives every
// rank its part. Embeddings, lm_head and (except SmoothQuant's folded smoothing) norms stay float.

import { castTensor } from '../core/dtype.js';
import type { DType, Tensor, Weights } from '../core/tensor.js';
import type { PretrainedConfig, QuantConfig } from '../core/config.js';
import { LAYER_LINEARS, TRTLLM_QUANT_ALGO, type QuantOptions } from './algorithms.js';
import { awqQuantize } from './awq.js';
import type { CalibrationStats } from './calib-stats.js';
import { FP8_E4M3_MAX, quantizeFp8, roundHalfEven } from './fp8.js';
import { ortMatmulNT } from './ort-kernels.js';
import { scaleColumns, smoothingFactors } from './smoothquant.js';
import { bytesTensor, f32Tensor, toFloat32 } from './tensor-f32.js';
import type { TllmQuantAlgo } from '../sharding/tllm-layout.js';
import { dequantizeInt8PerChannel, quantizeInt4Grouped, quantizeInt8PerChannel, unpackInt4 } from './weights.js';

export const INT8_KV_MAX = 127;

export function quantConfigFor(o: QuantOptions): QuantConfig {
  const q: QuantConfig = {
    quant_algo: o.algo ? TRTLLM_QUANT_ALGO[o.algo] : null,
    kv_cache_quant_algo: o.kvCache === 'int8' ? 'INT8' : null,
  };
  if (o.algo === 'int4_wo' || o.algo === 'int4_awq' || o.algo === 'w4a8_awq') {
    q.group_size = o.groupSize ?? 128;
    q.has_zero_point = false;
    q.pre_quant_scale = true;
  }
  if (o.algo === 'w8a8_sq' || o.algo === 'w8a8') {
    // TensorRT-LLM encodes the activation scaling in quant_algo (QuantConfig has no other field for it):
    // per token = the SmoothQuant plugin layout, per tensor = ModelOpt's int8_sq (Int8SmoothQuantLinear).
    if (o.sqActivations === 'per-tensor') q.quant_algo = 'W8A8_SQ_PER_CHANNEL';
    if (o.algo === 'w8a8_sq') q.smoothquant_val = o.smoothAlpha ?? 0.5;
  }
  return q;
}

export interface QuantReport {
  linear: string;
  detail: Record<string, number>;
}

/** ModelOpt's pack_int4_in_uint8 + .view(int8): signed q [N, K] → int8 [N/2, K], row 2i low nibble. */
export function packInt4AlongN(q: Int8Array, n: number, k: number): Int8Array {
  if (n % 2) throw new Error(`cannot pack ${n} output rows two per byte (odd)`);
  const out = new Int8Array((n / 2) * k);
  for (let i = 0; i < n / 2; i++) {
    for (let c = 0; c < k; c++) out[i * k + c] = ((q[2 * i * k + c] & 15) | ((q[(2 * i + 1) * k + c] & 15) << 4)) << 24 >> 24;
  }
  return out;
}

/** The inverse of packInt4AlongN: int8 [N/2, K] → signed q [N, K]. */
export function unpackInt4AlongN(packed: Uint8Array, n: number, k: number): Int8Array {
  const q = new Int8Array(n * k);
  for (let i = 0; i < n / 2; i++) {
    for (let c = 0; c < k; c++) {
      const b = packed[i * k + c];
      q[2 * i * k + c] = ((b & 15) << 28) >> 28;
      q[(2 * i + 1) * k + c] = (b << 24) >> 28;
    }
  }
  return q;
}

function modelTensor(values: Float32Array, shape: number[], dtype: DType): Tensor {
  return castTensor(f32Tensor(values, shape), dtype);
}

/** The values a float32 vector takes once stored in `dtype` (what TensorRT-LLM will multiply by). */
function roundTo(values: Float32Array, dtype: DType): Float32Array {
  return toFloat32(modelTensor(values, [values.length], dtype));
}

function one(v: number): Tensor {
  return f32Tensor(Float32Array.of(Math.fround(v)), [1]);
}

/** Returns new weights (float tensors not quantized are shared, not copied) and a per-linear report. */
export async function quantizeWeights(
  config: PretrainedConfig, weights: Weights, o: QuantOptions, stats?: CalibrationStats, onLayer?: () => void,
): Promise<{ weights: Weights; quantization: QuantConfig; report: QuantReport[] }> {
  const out: Weights = new Map(weights);
  const report: QuantReport[] = [];
  const quantization = quantConfigFor(o);
  const algo = quantization.quant_algo as TllmQuantAlgo | null;
  const dt = config.dtype as DType;
  const g = o.groupSize ?? 128;
  const statsFor = (prefix: string) => {
    const s = stats?.linears.get(prefix);
    if (!s) throw new Error(`no calibration activations for ${prefix} (calibration did not run?)`);
    return s;
  };
  const linear = (prefix: string) => {
    const name = `${prefix}.weight`;
    const t = weights.get(name);
    if (!t) throw new Error(`missing tensor ${name}`);
    if (t.shape.length !== 2) throw new Error(`${name}: expected a 2-D weight, got shape [${t.shape}]`);
    const [n, k] = t.shape;
    return { name, n, k, w: toFloat32(t, name) };
  };
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const layer = `transformer.layers.${l}`;
    if (algo === 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN') await sqPluginLayer(layer);
    else if (algo && algo !== 'W8A16') {
      for (const lin of LAYER_LINEARS) await quantizeLinear(`${layer}.${lin}`);
    }
    // W8A16: float weights stay; TensorRT-LLM (and tprun's engine builder) quantize them per channel.
    if (o.kvCache === 'int8') {
      const amax = stats?.kvAbsmax.get(l);
      if (amax === undefined) throw new Error(`no calibrated KV-cache range for layer ${l}`);
      out.set(`${layer}.attention.kv_cache_scaling_factor`, one(Math.max(amax, 1e-8) / INT8_KV_MAX));
    }
    onLayer?.();
  }
  return { weights: out, quantization, report };

  async function quantizeLinear(prefix: string): Promise<void> {
    const { name, n, k, w } = linear(prefix);
    const put = (role: string, v: Tensor) => out.set(`${prefix}.${role}`, v);
    switch (algo) {
      case 'W4A16_AWQ':
      case 'W4A8_AWQ': {
        if (k % g) throw new Error(`${name}: K=${k} is not a multiple of --group-size ${g}`);
        // The prequant factor is stored in the model dtype: the weight is quantized against the rounded
        // value TensorRT-LLM multiplies the input by, so (x ⊙ p) · (W ⊘ p) stays W's product (awq.ts).
        // W4A16_AWQ's group scales are cast to the model dtype at load (TRT modeling_utils.py
        // preprocess_weights: weights_scaling_factor .T.contiguous().to(model dtype)): they are stored
        // (F32) already rounded to it, and the weight is rounded against exactly those values, so the cast
        // is lossless and TensorRT-LLM multiplies by what tprun's engine multiplies by. W4A8_AWQ's are
        // divided by weights_scaling_factor_2 after that cast, which no stored value can make exact: kept.
        const storeScale = algo === 'W4A16_AWQ' ? (v: Float32Array) => roundTo(v, dt) : undefined;
        let p: Float32Array = new Float32Array(k).fill(1);
        let q4 = quantizeInt4Grouped(w, n, k, g, undefined, storeScale);
        if (o.algo !== 'int4_wo') {
          const st = statsFor(prefix);
          const r = await awqQuantize(w, n, k, g, st.meanAbs(), st.sample(), { grid: o.awqGrid, clipSearch: o.awqClip ?? true, store: (v) => roundTo(v, dt), storeScale });
          p = r.prequant;
          q4 = r;
          report.push({ linear: prefix, detail: { alpha: r.alpha, error: r.error, rtn_error: r.rtnError } });
        }
        const q = unpackInt4(q4.packed, n * k);
        put('weight', bytesTensor('int8', [n / 2, k], packInt4AlongN(q, n, k)));
        put('weights_scaling_factor', f32Tensor(q4.scale, [n, k / g]));
        put('prequant_scaling_factor', modelTensor(p, [k], dt));
        if (algo === 'W4A8_AWQ') {
          const st = statsFor(prefix);
          let xmax = 0;
          for (let c = 0; c < k; c++) xmax = Math.max(xmax, st.absmax[c] * p[c]);
          let wmax = 0;
          for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) wmax = Math.max(wmax, Math.abs(q[r * k + c] * q4.scale[r * (k / g) + ((c / g) | 0)]));
          put('activation_scaling_factor', one(Math.max(xmax, 1e-8) / FP8_E4M3_MAX));
          put('weights_scaling_factor_2', one(Math.max(wmax, 1e-8) / FP8_E4M3_MAX));
        }
        break;
      }
      case 'W8A8_SQ_PER_CHANNEL': {
        const st = statsFor(prefix);
        const s = o.algo === 'w8a8_sq' ? smoothingFactors(st.absmax, w, n, k, o.smoothAlpha ?? 0.5) : new Float32Array(k).fill(1);
        const p = roundTo(s.map((v) => 1 / v), dt);
        const q = quantizeInt8PerChannel(scaleColumns(w, n, k, p.map((v) => 1 / v)), n, k);
        let xmax = 0;
        for (let c = 0; c < k; c++) xmax = Math.max(xmax, st.absmax[c] * p[c]);
        put('weight', bytesTensor('int8', [n, k], q.q));
        put('weights_scaling_factor', f32Tensor(q.scale, [n]));
        put('activation_scaling_factor', one(Math.max(xmax, 1e-8) / 127));
        put('prequant_scaling_factor', modelTensor(p, [k], dt));
        break;
      }
      case 'FP8': {
        const st = statsFor(prefix);
        const q = quantizeFp8(w);
        put('weight', bytesTensor('float8_e4m3fn', [n, k], q.codes));
        put('weights_scaling_factor', one(q.scale));
        put('activation_scaling_factor', one(Math.max(st.tensorAbsmax(), 1e-8) / FP8_E4M3_MAX));
        break;
      }
      default:
        throw new Error(`quant_algo ${algo}: no quantizer`);
    }
  }

  /**
   * TensorRT-LLM's SmoothQuant plugin layout (llama/convert.py smooth_llama_model): qkv's smoothing is
   * folded into input_layernorm, fc's and gate's — ONE factor for both, from their stacked weights —
   * into post_layernorm; dense and proj keep theirs as `smoother`, which divides their input.
   */
  async function sqPluginLayer(layer: string): Promise<void> {
    const smooth = o.algo === 'w8a8_sq';
    // Smoothing is kept only where, on the calibration rows, it lowers the output error of the int8
    // arithmetic (fc and gate must share one factor in this layout, which can undo its benefit there).
    const helps = async (prefix: string, ls: { w: Float32Array; n: number }[], k: number, s: Float32Array) =>
      (await sqError(statsFor(prefix).sample(), ls, k, s)) < (await sqError(statsFor(prefix).sample(), ls, k, new Float32Array(k).fill(1)));
    const alpha = o.smoothAlpha ?? 0.5;
    const int8 = (prefix: string, w: Float32Array, n: number, k: number) => {
      const q = quantizeInt8PerChannel(w, n, k);
      out.set(`${prefix}.weight`, bytesTensor('int8', [n, k], q.q));
      out.set(`${prefix}.per_channel_scale`, f32Tensor(q.scale, [1, n]));
    };
    for (const [norm, lins] of [['input_layernorm', ['attention.qkv']], ['post_layernorm', ['mlp.fc', 'mlp.gate']]] as const) {
      const ls = lins.map((lin) => ({ prefix: `${layer}.${lin}`, ...linear(`${layer}.${lin}`) }));
      const k = ls[0].k;
      const normName = `${layer}.${norm}.weight`;
      const normT = weights.get(normName);
      if (!normT) throw new Error(`missing tensor ${normName}`);
      let sEff: Float32Array = new Float32Array(k).fill(1);
      if (smooth) {
        const rows = ls.reduce((a, x) => a + x.n, 0);
        const stacked = new Float32Array(rows * k);
        let at = 0;
        for (const x of ls) { stacked.set(x.w, at); at += x.w.length; }
        const s = smoothingFactors(statsFor(ls[0].prefix).absmax, stacked, rows, k, alpha);
        if (!(await helps(ls[0].prefix, ls, k, s))) s.fill(1);
        const nw = toFloat32(normT, normName);
        const folded = modelTensor(nw.map((v, c) => v / s[c]), [k], normT.dtype);
        const nf = toFloat32(folded, normName);
        // What the weights must absorb is what the stored (rounded) norm weight actually divided out.
        sEff = nw.map((v, c) => (v !== 0 && nf[c] !== 0 ? v / nf[c] : s[c]));
        out.set(normName, folded);
      }
      out.set(`${layer}.${norm}.scale_to_int`, modelTensor(Float32Array.of(1), [1], dt));
      for (const x of ls) int8(x.prefix, scaleColumns(x.w, x.n, k, sEff), x.n, k);
    }
    for (const lin of ['attention.dense', 'mlp.proj']) {
      const prefix = `${layer}.${lin}`;
      const { n, k, w } = linear(prefix);
      const s = smooth ? smoothingFactors(statsFor(prefix).absmax, w, n, k, alpha) : new Float32Array(k).fill(1);
      if (smooth && !(await helps(prefix, [{ w, n }], k, s))) s.fill(1);
      out.set(`${prefix}.smoother`, f32Tensor(s, [1, k]));
      int8(prefix, scaleColumns(w, n, k, s), n, k);
    }
  }
}

/**
 * ||X·W^T − Qtok(X ⊘ s)·Qch(W ⊙ s)^T||² summed over the linears sharing input X: the SmoothQuant
 * plugin's arithmetic (per-token int8 activations, per-channel int8 weights) on calibration rows.
 */
async function sqError(sample: { x: Float32Array; rows: number }, ls: { w: Float32Array; n: number }[], k: number, s: Float32Array): Promise<number> {
  const { x, rows } = sample;
  if (!rows) return 0;
  const xq = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) {
    let m = 0;
    for (let c = 0; c < k; c++) m = Math.max(m, Math.abs(x[i * k + c] / s[c]));
    const sc = Math.max(m, 1e-8) / 127;
    for (let c = 0; c < k; c++) xq[i * k + c] = Math.max(-127, Math.min(127, roundHalfEven(x[i * k + c] / s[c] / sc))) * sc;
  }
  let err = 0;
  for (const { w, n } of ls) {
    const wq = dequantizeInt8PerChannel(quantizeInt8PerChannel(scaleColumns(w, n, k, s), n, k), n, k);
    const y = await ortMatmulNT(xq, rows, wq, n, k), ref = await ortMatmulNT(x, rows, w, n, k);
    for (let i = 0; i < y.length; i++) err += (y[i] - ref[i]) ** 2;
  }
  return err;
}
