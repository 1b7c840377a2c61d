// In-process microbenchmark of onnxruntime's CPU MatMulNBits at batch-1 decode shapes (issue 14): graphs
// of one kind of linear, repeated over `copies` distinct weights (so that the weights stream from memory as
// in a model), run alternately, medians of the per-call times. Random weights: speed only.
// Usage: node scripts/cpu/nbits-bench.mjs CASE[,CASE...] [THREADS] [ROUNDS] [COPIES] [EXTRA_SESSION_OPTIONS_JSON]
// CASE: name=K:N:bits:block[:split][:acc][:half][:M]  (M: rows of activations, default 1 (decode); split > 1: one MatMulNBits of N outputs followed by a Split
// in that many parts; split < 0: that many MatMulNBits of N/-split outputs each, from the same input; acc:
// accuracy_level, default 4; half 1: float16 activations and scales; M > 1: prefill-shaped)
import ort from 'onnxruntime-node';
import { Graph, MS } from '../../dist/engine/graph.js';
import { WeightFile } from '../../dist/engine/weight-file.js';

const [casesArg, threadsArg, roundsArg, copiesArg, extraArg] = process.argv.slice(2);
const threads = Number(threadsArg ?? 1);
const rounds = Number(roundsArg ?? 15);
const copies = Number(copiesArg ?? 8);
const extra = extraArg ? JSON.parse(extraArg) : {};
let seed = 1;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 24; };
// float16 0.01-ish scales (0x2000 ≈ 0.0078) for the float16-activation cases.
const f16 = (n) => new Uint8Array(Uint16Array.from({ length: n }, () => 0x2000 + (rnd() >> 2)).buffer);
const f32 = (n, v) => new Uint8Array(Float32Array.from({ length: n }, () => v * (0.5 + (rnd() / 256))).buffer);

function graph(K, N, bits, bs, split, acc, dt, M) {
  const g = new Graph('b', dt, new WeightFile('unused.bin'));
  const x = g.input('x', dt, [1, M, K]);
  for (let c = 0; c < copies; c++) {
    // split < 0: -split separate MatMulNBits of N/-split outputs each, from the same input (fc and gate).
    for (let p = 0; p < Math.max(1, -split); p++) {
    const n = split < 0 ? N / -split : N;
    const b = g.constant('w', 'uint8', [n, K / bs, (bs * bits) / 8], Uint8Array.from({ length: (n * K * bits) / 8 }, rnd));
    const s = dt === 'float32' ? g.constant('s', 'float32', [n * (K / bs)], f32(n * (K / bs), 0.01)) : g.constant('s', 'float16', [n * (K / bs)], f16(n * (K / bs)));
    const y = g.op('MatMulNBits', [x, b, s], { K, N: n, bits, block_size: bs, ...(acc ? { accuracy_level: acc } : {}) }, MS);
    if (split > 1) {
      const outs = g.node('Split', [y, g.int64s('parts', Array(split).fill(N / split))], split, { axis: -1 });
      outs.forEach((o) => g.output(o, dt, [1, M, N / split]));
    } else g.output(y, dt, [1, M, n]);
    }
  }
  return g.encode();
}

const cases = casesArg.split(',').map((c) => {
  const [name, spec] = c.split('=');
  const [K, N, bits, bs, split = 1, acc = 4, half = 0, M = 1] = spec.split(':').map(Number);
  return { name, K, N, bits, bs, split, acc, M, dt: half ? 'float16' : 'float32' };
});
const opts = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential', extra: { session: { intra_op: { allow_spinning: '0' }, ...extra } } };
for (const c of cases) c.session = await ort.InferenceSession.create(graph(c.K, c.N, c.bits, c.bs, c.split, c.acc, c.dt, c.M), opts);
for (const c of cases) {
  const xs = Float32Array.from({ length: c.M * c.K }, () => rnd() / 128 - 1);
  // float16 activations: 0x3c00 = 1.0, plus small mantissa noise.
  c.feed = { x: c.dt === 'float32' ? new ort.Tensor('float32', xs, [1, c.M, c.K]) : new ort.Tensor('float16', Uint16Array.from(xs, () => 0x3800 + rnd()), [1, c.M, c.K]) };
  c.ms = [];
  for (let i = 0; i < 3; i++) await c.session.run(c.feed);
}
for (let r = 0; r < rounds; r++) {
  for (const c of (r % 2 ? [...cases].reverse() : cases)) {
    const t0 = performance.now();
    await c.session.run(c.feed);
    c.ms.push((performance.now() - t0) / copies);
  }
}
const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const base = med(cases[0].ms);
for (const c of cases) {
  const m = med(c.ms);
  const bytes = (c.N * c.K * c.bits) / 8 + (c.N * c.K / c.bs) * 4;
  process.stdout.write(`${JSON.stringify({ case: c.name, K: c.K, N: c.N, bits: c.bits, block: c.bs, split: c.split, acc: c.acc, M: c.M, dtype: c.dt, threads, ms_per_call: +m.toFixed(4), gb_per_s: +(bytes / m / 1e6).toFixed(2), ratio_to_first: +(m / base).toFixed(3) })}\n`);
}
