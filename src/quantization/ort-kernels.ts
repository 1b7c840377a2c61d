// The scale searches (AWQ) evaluate output errors hundreds of times on [T, K] x [K, N] products; plain
// JavaScript loops do ~0.4 GMAC/s here, onnxruntime's MLAS an order of magnitude or two more. Two tiny
// graphs with dynamic shapes, created once per process (onnxruntime is loaded on first use, so that
// importing the quantization library does not load it).

type Ort = typeof ortT;
type Session = ortT.InferenceSession;

import type ortT from 'onnxruntime-node';
import { encodeModel, type NodeSpec } from '../engine/onnx-proto.js';

function model(nodes: NodeSpec[], inputs: { name: string; dtype: 'float32' | 'int64'; dims: (string | number)[] }[], output: { name: string; dims: (string | number)[] }, consts: { name: string; values: number[] }[] = []): Uint8Array {
  return encodeModel({
    graphName: 'quant_kernel',
    nodes,
    initializers: consts.map((c) => ({ name: c.name, dtype: 'int64', dims: [c.values.length], raw: new Uint8Array(BigInt64Array.from(c.values.map(BigInt)).buffer) })),
    inputs,
    outputs: [{ name: output.name, dtype: 'float32', dims: output.dims }],
    opsets: [{ domain: '', version: 21 }],
    producer: 'tprun-quant',
  });
}

let sessions: Promise<{ ort: Ort; err: Session; grouped: Session; mm: Session }> | undefined;

function load() {
  sessions ??= (async () => {
    const ort = (await import('../engine/ort.js')).default;
    const opts: ortT.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
    // ||X · D^T||²
    const err = model([
      { op: 'Gemm', inputs: ['x', 'd'], outputs: ['y'], name: 'gemm', attrs: { transB: 1 } },
      { op: 'ReduceSumSquare', inputs: ['y'], outputs: ['e'], name: 'sq', attrs: { keepdims: 0 } },
    ], [{ name: 'x', dtype: 'float32', dims: ['t', 'k'] }, { name: 'd', dtype: 'float32', dims: ['n', 'k'] }], { name: 'e', dims: [] });
    // Per (group, row): Σ_t (X[t, group] · D[row, group])²  → [G, N]
    const grouped = model([
      { op: 'Reshape', inputs: ['x', 'xs'], outputs: ['x3'], name: 'rx' },
      { op: 'Transpose', inputs: ['x3'], outputs: ['xt'], name: 'tx', attrs: { perm: [1, 0, 2] } },
      { op: 'Reshape', inputs: ['d', 'ds'], outputs: ['d3'], name: 'rd' },
      { op: 'Transpose', inputs: ['d3'], outputs: ['dt'], name: 'td', attrs: { perm: [1, 2, 0] } },
      { op: 'MatMul', inputs: ['xt', 'dt'], outputs: ['y'], name: 'mm' },
      { op: 'ReduceSumSquare', inputs: ['y', 'axis1'], outputs: ['e'], name: 'sq', attrs: { keepdims: 0 } },
    ], [
      { name: 'x', dtype: 'float32', dims: ['t', 'k'] }, { name: 'd', dtype: 'float32', dims: ['n', 'k'] },
      { name: 'xs', dtype: 'int64', dims: [3] }, { name: 'ds', dtype: 'int64', dims: [3] },
    ], { name: 'e', dims: ['g', 'n'] }, [{ name: 'axis1', values: [1] }]);
    const mm = model([{ op: 'Gemm', inputs: ['x', 'w'], outputs: ['y'], name: 'gemm', attrs: { transB: 1 } }],
      [{ name: 'x', dtype: 'float32', dims: ['t', 'k'] }, { name: 'w', dtype: 'float32', dims: ['n', 'k'] }], { name: 'y', dims: ['t', 'n'] });
    return {
      ort,
      mm: await ort.InferenceSession.create(mm, opts),
      err: await ort.InferenceSession.create(err, opts),
      grouped: await ort.InferenceSession.create(grouped, opts),
    };
  })();
  return sessions;
}

export interface ErrorKernels {
  /** ||X · (A - B)^T||² for X [t, k], A and B [n, k]. */
  outputError(x: Float32Array, t: number, a: Float32Array, b: Float32Array, n: number, k: number): Promise<number>;
  /** Per group gi and row r: Σ_t (X[t, gi*g:(gi+1)*g] · D[r, same])², as [k/g, n]. */
  groupErrors(x: Float32Array, t: number, d: Float32Array, n: number, k: number, g: number): Promise<Float32Array>;
}

/** Y [t, n] = X [t, k] · W [n, k]^T */
export async function ortMatmulNT(x: Float32Array, t: number, w: Float32Array, n: number, k: number): Promise<Float32Array> {
  const { ort, mm } = await load();
  const out = await mm.run({ x: new ort.Tensor('float32', x, [t, k]), w: new ort.Tensor('float32', w, [n, k]) });
  return out.y.data as Float32Array;
}

export const ortKernels: ErrorKernels = {
  async outputError(x, t, a, b, n, k) {
    const { ort, err: s } = await load();
    const d = new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) d[i] = a[i] - b[i];
    const out = await s.run({ x: new ort.Tensor('float32', x, [t, k]), d: new ort.Tensor('float32', d, [n, k]) });
    return (out.e.data as Float32Array)[0];
  },
  async groupErrors(x, t, d, n, k, g) {
    const { ort, grouped: s } = await load();
    const G = k / g;
    const out = await s.run({
      x: new ort.Tensor('float32', x, [t, k]), d: new ort.Tensor('float32', d, [n, k]),
      xs: new ort.Tensor('int64', BigInt64Array.from([t, G, g].map(BigInt)), [3]),
      ds: new ort.Tensor('int64', BigInt64Array.from([n, G, g].map(BigInt)), [3]),
    });
    return out.e.data as Float32Array;
  },
};
