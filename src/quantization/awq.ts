// AWQ (Lin et al. 2024) for group-wise int4: a per-input-channel scale s protects the salient channels; the
// weight is quantized as Q(W·s) and the input divided by s (multiplied by the stored prequant factor 1/s).
// s = mean|X|^α / mean(|W|/groupmax)^(1-α), normalised, as ModelOpt's awq_lite computes it (what
// TensorRT-LLM's quantize.py --qformat int4_awq runs): the weight term lowers brown-llama-a's tp 2
// perplexity change from about +1.5% (activations alone, the AWQ paper's form) to +0.6-0.8%. α is searched on a
// grid to minimise the layer's output error on calibration activations, then each group's clipping range
// is searched the same way (AWQ's auto-clip).
//
// Every candidate is scored with the prequant factor rounded as the checkpoint stores it (the model dtype),
// as ModelOpt's search does (pre_quant_scale cast to the weight dtype): the weight is then quantized
// against exactly the factor TensorRT-LLM will multiply the activations by.

import { ortKernels, type ErrorKernels } from './ort-kernels.js';
import { scaleColumns } from './smoothquant.js';
import { dequantizeInt4Grouped, quantizeInt4Grouped, type Int4Grouped } from './weights.js';

export interface AwqResult extends Int4Grouped {
  /** s per input channel (1 / prequant). */
  s: Float32Array;
  /** The prequant factor per input channel, as stored (store(1/s)); the weight was quantized against it. */
  prequant: Float32Array;
  alpha: number;
  /** Per (row, group) clip ratio kept by the clipping search (undefined: none). */
  clip?: Float32Array;
  error: number;
  rtnError: number;
}

export interface AwqOptions {
  grid?: number;          // α ∈ {0, 1/grid, ..., 1}
  clipSearch?: boolean;
  clipSteps?: number[];   // shrink ratios tried per group
  kernels?: ErrorKernels;
  /** The values a prequant factor takes once stored (the checkpoint's dtype): the search scores those. */
  store?: (p: Float32Array) => Float32Array;
  /** The values the group scales take where they are used (TensorRT-LLM casts them to the model dtype). */
  storeScale?: (s: Float32Array) => Float32Array;
}

/**
 * Per input channel, the mean over output rows of |w| / (max |w| of its group): ModelOpt
 * modelopt/torch/quantization/model_calib.py awq_lite get_weight_scale.
 */
function weightMeanScale(w: Float32Array, n: number, k: number, g: number): Float32Array {
  const out = new Float32Array(k);
  for (let r = 0; r < n; r++) {
    for (let g0 = 0; g0 < k; g0 += g) {
      let m = 0;
      for (let c = g0; c < g0 + g; c++) m = Math.max(m, Math.abs(w[r * k + c]));
      for (let c = g0; c < g0 + g; c++) out[c] += Math.abs(w[r * k + c]) / (m + 1e-30);
    }
  }
  for (let c = 0; c < k; c++) out[c] /= n;
  return out;
}

type Store = (v: Float32Array) => Float32Array;

function fakeQuant(w: Float32Array, n: number, k: number, g: number, clip?: Float32Array, storeScale?: Store): Float32Array {
  return dequantizeInt4Grouped(quantizeInt4Grouped(w, n, k, g, clip, storeScale), n, k, g);
}

export async function awqQuantize(
  w: Float32Array, n: number, k: number, g: number,
  xMeanAbs: Float32Array, sample: { x: Float32Array; rows: number }, opts: AwqOptions = {},
): Promise<AwqResult> {
  const grid = opts.grid ?? 20;
  const kern = opts.kernels ?? ortKernels;
  const store = opts.store ?? ((p: Float32Array) => p);
  const { x, rows } = sample;
  const ss = opts.storeScale;
  const rtnError = await kern.outputError(x, rows, fakeQuant(w, n, k, g, undefined, ss), w, n, k);
  const wMean = weightMeanScale(w, n, k, g);
  let best: { alpha: number; error: number; s: Float32Array; p: Float32Array } = { alpha: 0, error: rtnError, s: new Float32Array(k).fill(1), p: new Float32Array(k).fill(1) };
  // α = 0 is a candidate too (s = 1/wMean), as in awq_lite's grid; plain RTN (s = 1) is the baseline.
  for (let i = 0; i <= grid; i++) {
    const alpha = i / grid;
    // awq_lite get_scale: x^α / w^(1-α), clamped to [1e-4, 1e4], normalised by sqrt(max · min).
    const s = new Float32Array(k);
    let mx = 0, mn = Infinity;
    for (let c = 0; c < k; c++) {
      s[c] = Math.min(1e4, Math.max(1e-4, Math.max(xMeanAbs[c], 1e-4) ** alpha / (wMean[c] ** (1 - alpha) + 1e-30)));
      mx = Math.max(mx, s[c]);
      mn = Math.min(mn, s[c]);
    }
    const norm = Math.sqrt(mx * mn);
    const p = store(s.map((v) => norm / v));
    for (let c = 0; c < k; c++) s[c] = Math.fround(1 / p[c]);
    const wq = scaleColumns(fakeQuant(scaleColumns(w, n, k, s), n, k, g, undefined, ss), n, k, s.map((v) => 1 / v));
    const err = await kern.outputError(x, rows, wq, w, n, k);
    if (err < best.error) best = { alpha, error: err, s, p };
  }
  const inv = best.s.map((v) => 1 / v);
  const ws = scaleColumns(w, n, k, best.s);
  let clip: Float32Array | undefined;
  let error = best.error;
  if (opts.clipSearch) {
    clip = await searchClip(ws, n, k, g, scaleInputs(x, rows, k, best.s), rows, kern, opts.clipSteps, ss);
    error = await kern.outputError(x, rows, scaleColumns(fakeQuant(ws, n, k, g, clip, ss), n, k, inv), w, n, k);
    // The per-group search ignores cross-group terms; keep clipping only when the whole layer gains.
    if (error > best.error) { clip = undefined; error = best.error; }
  }
  const q = quantizeInt4Grouped(ws, n, k, g, clip, ss);
  return { ...q, s: best.s, prequant: best.p, alpha: best.alpha, clip, error, rtnError };
}

function scaleInputs(x: Float32Array, rows: number, k: number, s: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) for (let c = 0; c < k; c++) out[i * k + c] = x[i * k + c] / s[c];
  return out;
}

/** Per (row, group) clip ratio minimising that group's output error Σ_t (x_t,g · (q(w_g) - w_g))². */
async function searchClip(w: Float32Array, n: number, k: number, g: number, x: Float32Array, rows: number, kern: ErrorKernels, steps?: number[], storeScale?: Store): Promise<Float32Array> {
  const ratios = steps ?? [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6];
  const G = k / g;
  const clip = new Float32Array(n * G).fill(1);
  const bestErr = new Float32Array(n * G).fill(Infinity);
  for (const ratio of ratios) {
    const wq = fakeQuant(w, n, k, g, new Float32Array(n * G).fill(ratio), storeScale);
    const d = wq.map((v, i) => v - w[i]);
    const e = await kern.groupErrors(x, rows, d, n, k, g); // [G, n]
    for (let gi = 0; gi < G; gi++) {
      for (let r = 0; r < n; r++) {
        const v = e[gi * n + r];
        if (v < bestErr[r * G + gi]) { bestErr[r * G + gi] = v; clip[r * G + gi] = ratio; }
      }
    }
  }
  return clip;
}
