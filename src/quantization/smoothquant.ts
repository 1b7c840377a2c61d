// SmoothQuant (Xiao et al. 2023): migrate activation outliers into the weights with a per-input-channel
// factor s_j = max|X_j|^α / max|W_j|^(1-α); the layer computes (X / s) · (W · s)^T, which is exact in
// float and makes both operands easier to quantize to int8.

export function smoothingFactors(xAbsmax: Float32Array, w: Float32Array, n: number, k: number, alpha = 0.5): Float32Array {
  const wAbsmax = new Float32Array(k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const a = Math.abs(w[r * k + c]);
      if (a > wAbsmax[c]) wAbsmax[c] = a;
    }
  }
  const s = new Float32Array(k);
  for (let c = 0; c < k; c++) {
    // Channels never active in calibration (or all-zero weight columns) keep s = 1: nothing to migrate.
    const x = xAbsmax[c], wm = wAbsmax[c];
    s[c] = x > 0 && wm > 0 ? Math.max(1e-5, x ** alpha / wm ** (1 - alpha)) : 1;
  }
  return s;
}

/** W · diag(s): column j of [N, K] times s_j. */
export function scaleColumns(w: Float32Array, n: number, k: number, s: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) out[r * k + c] = w[r * k + c] * s[c];
  return out;
}

export function reciprocal(s: Float32Array): Float32Array {
  return s.map((v) => 1 / v);
}
