// AWQ (Lin et al. 2024) for group-wise int4: a per-input-channel scale s = mean|X|^α (normalised) protects
// the salient channels; the weight is quantized as Q(W·s) and the input divided by s. α is searched on a
// grid to minimise the layer's output error on calibration activations, then each group's clipping range
// is searched the same way (AWQ's auto-clip).

import { ortKernels, type ErrorKernels } from './ort-kernels.js';
import { scaleColumns } from './smoothquant.js';
import { dequantizeInt4Grouped, quantizeInt4Grouped, type Int4Grouped } from './weights.js';

export interface AwqResult extends Int4Grouped {
  /** s per input channel: the stored prequant factor is 1/s. */
  s: Float32Array;
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
}

function fakeQuant(w: Float32Array, n: number, k: number, g: number, clip?: Float32Array): Float32Array {
  return dequantizeInt4Grouped(quantizeInt4Grouped(w, n, k, g, clip), n, k, g);
}

export async function awqQuantize(
  w: Float32Array, n: number, k: number, g: number,
  xMeanAbs: Float32Array, sample: { x: Float32Array; rows: number }, opts: AwqOptions = {},
): Promise<AwqResult> {
  const grid = opts.grid ?? 20;
  const kern = opts.kernels ?? ortKernels;
  const { x, rows } = sample;
  const rtnError = await kern.outputError(x, rows, fakeQuant(w, n, k, g), w, n, k);
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
    const err = await kern.outputError(x, rows, wq, w, n, k);
    if (err < best.error) best = { alpha, error: err, s };
  }
  const inv = best.s.map((v) => 1 / v);
  const ws = scaleColumns(w, n, k, best.s);
  let clip: Float32Array | undefined;
  let error = best.error;
  if (opts.clipSearch) {
    clip = await searchClip(ws, n, k, g, scaleInputs(x, rows, k, best.s), rows, kern, opts.clipSteps);
    error = await kern.outputError(x, rows, scaleColumns(fakeQuant(ws, n, k, g, clip), n, k, inv), w, n, k);
    // The per-group search ignores cross-group terms; keep clipping only when the whole layer gains.
    if (error > best.error) { clip = undefined; error = best.error; }
  }
  const q = quantizeInt4Grouped(ws, n, k, g, clip);
  return { ...q, s: best.s, alpha: best.alpha, clip, error, rtnError };
}

function scaleInputs(x: Float32Array, rows: number, k: number, s: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) for (let c = 0; c < k; c++) out[i * k + c] = x[i * k + c] / s[c];
  return out;
}

/** Per (row, group) clip ratio minimising that group's output error Σ_t (x_t,g · (q(w_g) - w_g))². */
async function searchClip(w: Float32Array, n: number, k: number, g: number, x: Float32Array, rows: number, kern: ErrorKernels, steps?: number[]): Promise<Float32Array> {
  const ratios = steps ?? [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6];
  const G = k / g;
  const clip = new Float32Array(n * G).fill(1);
  const bestErr = new Float32Array(n * G).fill(Infinity);
  for (const ratio of ratios) {
    const wq = fakeQuant(w, n, k, g, new Float32Array(n * G).fill(ratio));
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
