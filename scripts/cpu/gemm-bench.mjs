// In-process microbenchmark (issue 14, session 10): one linear of [M, K] × [K, N] on onnxruntime's CPU
// provider, the kernels a weight-only engine can use, alternating, medians of per-call times. Random
// weights: speed only. Kinds: nb4 / nb8 = MatMulNBits 4/8-bit, blocks of 256, accuracy_level 4 (what CPU
// builds emit); gemm = per-row int8 activations (u8, zero point 128) × int8 [K, N] on MatMulInteger
// (what --prefill-int8-gemm emits); gemmu = the same with uint8 weights (zero point 128), what onnxruntime
// runs instead on x86 CPUs without VNNI under session.x64quantprecision (src/engine/runtime.ts); dqmm = DynamicQuantizeMatMul (per-tensor u8 activations); ifgemm = the
// If(rows > 1) of gemm and nb8; gemm2 = gemm in fewer nodes (blocked QuantizeLinear, MatMulIntegerToFloat).
// Usage: node scripts/cpu/gemm-bench.mjs M,K,N[,COPIES,ROUNDS,THREADS] [KINDS]   (one JSON line per kind)
import ort from 'onnxruntime-node';
import { Graph, MS } from '../../dist/engine/graph.js';
import { WeightFile } from '../../dist/engine/weight-file.js';

const [M, K, N, copies = 4, rounds = 7, threads = 1] = process.argv[2].split(',').map(Number);
const kinds = (process.argv[3] ?? 'nb4,nb8,gemm').split(',');
let seed = 1;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 24; };
const f32 = (n, v) => new Uint8Array(Float32Array.from({ length: n }, () => v * (0.5 + rnd() / 256)).buffer);
const bytes = (n) => Uint8Array.from({ length: n }, rnd);

function graph(kind) {
  const g = new Graph('b', 'float32', new WeightFile('unused.bin'));
  const x = g.input('x', 'float32', [1, M, K]);
  const f = (h, v) => h.constant('c', 'float32', [], new Uint8Array(Float32Array.of(v).buffer));
  const nbits = (h, bits) => h.op('MatMulNBits', [x, h.constant('w', 'uint8', [N, K / 256, 32 * bits], bytes((N * K * bits) / 8)), h.constant('s', 'float32', [N * K / 256], f32(N * K / 256, 0.01))], { K, N, bits, block_size: 256, accuracy_level: 4 }, MS);
  // unsigned: gemmu, both operands uint8 with zero point 128 (exact without VNNI).
  const gemm = (h, unsigned = false) => {
    const xs = h.op('Div', [h.op('Max', [h.op('ReduceMax', [h.op('Abs', [x]), h.int64s('axes', [-1])], { keepdims: 1 }), f(h, 1e-8)]), f(h, 127)]);
    const xq = h.op('Cast', [h.op('Add', [h.op('Clip', [h.op('Round', [h.op('Div', [x, xs])]), f(h, -127), f(h, 127)]), f(h, 128)])], { to: 2 });
    const z = h.constant('z', 'uint8', [], Uint8Array.of(128));
    const acc = h.op('MatMulInteger', unsigned ? [xq, h.constant('w', 'uint8', [K, N], bytes(K * N)), z, z] : [xq, h.constant('w', 'int8', [K, N], bytes(K * N)), z]);
    return h.op('Mul', [h.op('Mul', [h.op('Cast', [acc], { to: 1 }), xs]), h.constant('s', 'float32', [N], f32(N, 0.01))]);
  };
  // gemm2: the same arithmetic in fewer nodes: blocked QuantizeLinear (one scale per row) and MatMulIntegerToFloat.
  const gemm2 = (h) => {
    const xs = h.op('Div', [h.op('Max', [h.op('ReduceMax', [h.op('Abs', [x]), h.int64s('axes', [-1])], { keepdims: 1 }), f(h, 1e-8)]), f(h, 127)]);
    // Blocked QuantizeLinear wants its zero point shaped as its scale.
    const zp = h.op('Expand', [h.constant('z', 'uint8', [1], Uint8Array.of(128)), h.op('Shape', [xs])]);
    const xq = h.op('QuantizeLinear', [x, xs, zp], { axis: -1, block_size: K });
    const y = h.op('MatMulIntegerToFloat', [xq, h.constant('w', 'int8', [K, N], bytes(K * N)), f(h, 1), h.constant('s', 'float32', [N], f32(N, 0.01)), h.constant('z', 'uint8', [], Uint8Array.of(128))], {}, MS);
    return h.op('Mul', [y, xs]);
  };
  let rows;
  for (let c = 0; c < copies; c++) {
    let y;
    if (kind === 'nb4' || kind === 'nb8') y = nbits(g, kind === 'nb4' ? 4 : 8);
    else if (kind === 'gemm' || kind === 'gemmu') y = gemm(g, kind === 'gemmu');
    else if (kind === 'gemm2') y = gemm2(g);
    else if (kind === 'dqmm') y = g.op('DynamicQuantizeMatMul', [x, g.constant('w', 'int8', [K, N], bytes(K * N)), g.constant('s', 'float32', [N], f32(N, 0.01))], {}, MS);
    else if (kind === 'ifgemm') {
      rows ??= g.op('Squeeze', [g.op('Greater', [g.op('Shape', [x], { start: -2, end: -1 }), g.int64s('one', [1])])]);
      y = g.op('If', [rows], { then_branch: g.branch('gemm', 'float32', (h) => [gemm(h)]), else_branch: g.branch('nb8', 'float32', (h) => [nbits(h, 8)]) });
    } else throw new Error(`unknown kind ${kind}`);
    g.output(y, 'float32', [1, M, N]);
  }
  return g.encode();
}

const opts = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential', logSeverityLevel: 3, extra: { session: { intra_op: { allow_spinning: '0' } } } };
const cs = [];
for (const kind of kinds) cs.push({ kind, s: await ort.InferenceSession.create(graph(kind), opts), ms: [] });
const feed = { x: new ort.Tensor('float32', Float32Array.from({ length: M * K }, () => rnd() / 128 - 1), [1, M, K]) };
for (const c of cs) for (let i = 0; i < 2; i++) await c.s.run(feed);
for (let r = 0; r < rounds; r++) {
  for (const c of (r % 2 ? [...cs].reverse() : cs)) {
    const t0 = performance.now();
    await c.s.run(feed);
    c.ms.push((performance.now() - t0) / copies);
  }
}
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const base = med(cs[0].ms);
for (const c of cs) {
  const m = med(c.ms);
  process.stdout.write(`${JSON.stringify({ kind: c.kind, M, K, N, threads, ms_per_call: +m.toFixed(4), gflop_per_s: +((2 * M * K * N) / m / 1e6).toFixed(1), ratio_to_first: +(m / base).toFixed(3) })}\n`);
}
