// Next-token choice: greedy (temperature 0), or temperature / top-k / top-p sampling from a seeded
// generator. Every rank holds the same gathered logits and the same seed, so every rank picks the same
// token without another collective.

export interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** mulberry32: small, fast, and identical on every platform (Math.random is neither seedable nor shared). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function argmax(logits: Float32Array, from = 0, to = logits.length): number {
  let best = from;
  for (let i = from + 1; i < to; i++) if (logits[i] > logits[best]) best = i;
  return best - from;
}

/** Picks a token from one row of logits. */
export function sampleToken(row: Float32Array, opts: SamplingOptions, rand: () => number): number {
  const t = opts.temperature ?? 0;
  if (t <= 0) return argmax(row);
  let idx = Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
  if (opts.topK && opts.topK > 0) idx = idx.slice(0, opts.topK);
  const max = row[idx[0]];
  let probs = idx.map((i) => Math.exp((row[i] - max) / t));
  let sum = probs.reduce((s, p) => s + p, 0);
  probs = probs.map((p) => p / sum);
  if (opts.topP !== undefined && opts.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < opts.topP) acc += probs[keep++];
    idx = idx.slice(0, Math.max(1, keep));
    probs = probs.slice(0, Math.max(1, keep));
    sum = probs.reduce((s, p) => s + p, 0);
    probs = probs.map((p) => p / sum);
  }
  let u = rand();
  for (let k = 0; k < probs.length; k++) {
    u -= probs[k];
    if (u <= 0) return idx[k];
  }
  return idx[idx.length - 1];
}
