// AWQ (Lin et al. 2024) for group-wise int4: a per-input-channel scale s = mean|X|^α (normalised) protects
// the salient channels; the weight is quantized as Q(W·s) and the input divided by s. α is searched on a
// grid to minimise the layer's output error on calibration activations, then (optionally) each group's
// clipping range is searched the same way.

import { roundHalfEven } from './fp8.js';
import { outputError } from './linalg.js';
import { scaleColumns } from './smoothquant.js';
import { dequantizeInt4Grouped, quantizeInt4Grouped, type Int4Grouped } from './weights.js';

export interface AwqResult extends Int4Grouped {
  /** s per input channel: the stored prequant factor is 1/s. */
  s: Float32Array;
  alpha: number;
  error: number;
  rtnError: number;
}

export interface AwqOptions {
  grid?: number;          // α ∈ {0, 1/grid, ..., 1}
  clipSearch?: boolean;
  clipSteps?: number[];   // shrink ratios tried per group
}

function fakeQuant(w: Float32Array, n: number, k: number, g: number, clip?: Float32Array): Float32Array {
  return dequantizeInt4Grouped(quantizeInt4Grouped(w, n, k, g, clip), n, k, g);
}

export function awqQuantize(
  w: Float32Array, n: number, k: number, g: number,
  xMeanAbs: Float32Array, sample: { x: Float32Array; rows: number }, opts: AwqOptions = {},
): AwqResult {
  const grid = opts.grid ?? 20;
  const { x, rows } = sample;
  const rtnError = outputError(x, rows, fakeQuant(w, n, k, g), w, n, k);
  let best = { alpha: 0, error: rtnError, s: new Float32Array(k).fill(1) };
  for (let i = 1; i <= grid; i++) {
    const alpha = i / grid;
    const s = new Float32Array(k);
    let mx = 0, mn = Infinity;
    for (let c = 0; c < k; c++) {
      s[c] = Math.max(xMeanAbs[c], 1e-4) ** alpha;
      mx = Math.max(mx, s[c]);
      mn = Math.min(mn, s[c]);
    }
    const norm = Math.sqrt(mx * mn);
    for (let c = 0; c < k; c++) s[c] = Math.fround(s[c] / norm);
    const wq = scaleColumns(fakeQuant(scaleColumns(w, n, k, s), n, k, g), n, k, s.map((v) => 1 / v));
    const err = outputError(x, rows, wq, w, n, k);
    if (err < best.error) best = { alpha, error: err, s };
  }
  const ws = scaleColumns(w, n, k, best.s);
  const clip = opts.clipSearch ? searchClip(ws, n, k, g, scaleInputs(x, rows, k, best.s), rows, opts.clipSteps) : undefined;
  const q = quantizeInt4Grouped(ws, n, k, g, clip);
  const error = clip
    ? outputError(x, rows, scaleColumns(dequantizeInt4Grouped(q, n, k, g), n, k, best.s.map((v) => 1 / v)), w, n, k)
    : best.error;
  return { ...q, s: best.s, alpha: best.alpha, error, rtnError };
}

function scaleInputs(x: Float32Array, rows: number, k: number, s: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) for (let c = 0; c < k; c++) out[i * k + c] = x[i * k + c] / s[c];
  return out;
}

/**
 * Per (row, group) clip ratio minimising that group's contribution to the output error,
 * Σ_t (x_t,g · (q(w_g) - w_g))², evaluated on the (already scaled) inputs.
 */
function searchClip(w: Float32Array, n: number, k: number, g: number, x: Float32Array, rows: number, steps?: number[]): Float32Array {
  const ratios = steps ?? [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7];
  const ng = k / g;
  const clip = new Float32Array(n * ng).fill(1);
  const d = new Float32Array(g);
  for (let r = 0; r < n; r++) {
    for (let gi = 0; gi < ng; gi++) {
      const base = r * k + gi * g;
      let amax = 0;
      for (let c = 0; c < g; c++) amax = Math.max(amax, Math.abs(w[base + c]));
      if (amax === 0) continue;
      let bestErr = Infinity;
      for (const ratio of ratios) {
        const sc = Math.fround((amax * ratio) / 7);
        for (let c = 0; c < g; c++) {
          const v = w[base + c];
          const q = Math.max(-8, Math.min(7, roundHalfEven(v / sc)));
          d[c] = q * sc - v;
        }
        let err = 0;
        for (let t = 0; t < rows; t++) {
          const xo = t * k + gi * g;
          let dot = 0;
          for (let c = 0; c < g; c++) dot += x[xo + c] * d[c];
          err += dot * dot;
        }
        if (err < bestErr) { bestErr = err; clip[r * ng + gi] = ratio; }
      }
    }
  }
  return clip;
}
