// Statistics of the input activations of each linear, gathered while the float model runs over the
// calibration text. Streaming: per-channel reductions over every token, plus a bounded sample of rows
// (the AWQ search measures layer output error on it).

export class LinearInputStats {
  readonly absmax: Float32Array;   // per input channel, max |x|
  readonly absSum: Float64Array;   // per input channel, sum |x| (mean = absSum / tokens)
  tokens = 0;
  private sampleRows: Float32Array[] = [];

  constructor(readonly k: number, readonly maxSample = 512) {
    this.absmax = new Float32Array(k);
    this.absSum = new Float64Array(k);
  }

  /** rows: [T, K] row-major activations. Every `stride`-th row joins the sample, up to maxSample rows. */
  add(rows: Float32Array, stride = 4): void {
    const k = this.k;
    if (rows.length % k !== 0) throw new Error(`calibration activations of ${rows.length} values are not rows of ${k}`);
    const t = rows.length / k;
    for (let i = 0; i < t; i++) {
      const off = i * k;
      for (let j = 0; j < k; j++) {
        const a = Math.abs(rows[off + j]);
        if (a > this.absmax[j]) this.absmax[j] = a;
        this.absSum[j] += a;
      }
      if ((this.tokens + i) % stride === 0 && this.sampleRows.length < this.maxSample) {
        this.sampleRows.push(rows.slice(off, off + k));
      }
    }
    this.tokens += t;
  }

  meanAbs(): Float32Array {
    const out = new Float32Array(this.k);
    for (let j = 0; j < this.k; j++) out[j] = this.absSum[j] / Math.max(1, this.tokens);
    return out;
  }

  tensorAbsmax(): number {
    let m = 0;
    for (const v of this.absmax) m = Math.max(m, v);
    return m;
  }

  /** The sampled rows as one [S, K] matrix. */
  sample(): { x: Float32Array; rows: number } {
    const x = new Float32Array(this.sampleRows.length * this.k);
    this.sampleRows.forEach((r, i) => x.set(r, i * this.k));
    return { x, rows: this.sampleRows.length };
  }
}

/** Keyed by linear prefix (`transformer.layers.3.mlp.fc`), plus the per-layer KV cache absmax. */
export interface CalibrationStats {
  linears: Map<string, LinearInputStats>;
  /** layer index → max |k| (post-rotary bound) and |v| over the calibration tokens. */
  kvAbsmax: Map<number, number>;
  tokens: number;
}
