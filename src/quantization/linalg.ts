// Plain float32 Y = X·W^T for the small products calibration needs (KV-cache ranges) and tests.

/** Y[T, N] = X[T, K] · W[N, K]^T */
export function matmulNT(x: Float32Array, t: number, w: Float32Array, n: number, k: number, out?: Float32Array): Float32Array {
  const y = out ?? new Float32Array(t * n);
  for (let i = 0; i < t; i++) {
    const xo = i * k;
    for (let r = 0; r < n; r++) {
      const wo = r * k;
      let acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
      let c = 0;
      for (; c + 3 < k; c += 4) {
        acc0 += x[xo + c] * w[wo + c];
        acc1 += x[xo + c + 1] * w[wo + c + 1];
        acc2 += x[xo + c + 2] * w[wo + c + 2];
        acc3 += x[xo + c + 3] * w[wo + c + 3];
      }
      for (; c < k; c++) acc0 += x[xo + c] * w[wo + c];
      y[i * n + r] = acc0 + acc1 + acc2 + acc3;
    }
  }
  return y;
}
