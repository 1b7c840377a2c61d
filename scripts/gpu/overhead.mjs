// Where one session.run's time goes on ORT's WebGPU provider (vs the CPU provider), for graphs of 1 and
// 64 Adds: CPU tensors in and out; outputs left on the GPU ('gpu-buffer'); GPU outputs fed back as
// inputs; the readback of a GPU output on its own; input upload size. Prints one JSON line per case.
// Usage (from the project root, after `npx tsc -p .`): node scripts/gpu/overhead.mjs [--reps N]
import ort from 'onnxruntime-node';
import { Graph } from '../../dist/engine/graph.js';
import { WeightFile } from '../../dist/engine/weight-file.js';

const reps = Number(process.argv[process.argv.indexOf('--reps') + 1]) || 200;

function addChain(n) {
  const g = new Graph(`add${n}`, 'float32', new WeightFile('none.bin'));
  let v = g.input('x', 'float32', [1, 'n']);
  const one = g.constant('one', 'float32', [1], new Uint8Array(Float32Array.of(1).buffer));
  for (let i = 0; i < n; i++) v = g.op('Add', [v, one]);
  g.node('Identity', [v], ['y']);
  g.output('y', 'float32', [1, 'n']);
  return g.encode();
}

async function timeIt(fn) {
  for (let i = 0; i < 10; i++) await fn();
  const t = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); await fn(); t.push(performance.now() - t0); }
  t.sort((a, b) => a - b);
  return { median_ms: +t[t.length >> 1].toFixed(4), p10_ms: +t[Math.floor(t.length / 10)].toFixed(4) };
}

const out = (o) => process.stdout.write(`${JSON.stringify({ bench: 'webgpu-overhead', ...o })}\n`);
const validation = process.env.TPRUN_WEBGPU_VALIDATION; // e.g. 'disabled' to compare
const webgpu = validation ? [{ name: 'webgpu', validationMode: validation }] : ['webgpu'];

for (const nodes of [1, 64]) {
  const model = addChain(nodes);
  for (const elems of [4, 4096, 1 << 20]) {
    const x = new ort.Tensor('float32', new Float32Array(elems), [1, elems]);
    const cpu = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
    out({ case: 'cpu ep', nodes, elems, ...(await timeIt(() => cpu.run({ x }))) });
    await cpu.release();
    const g1 = await ort.InferenceSession.create(model, { executionProviders: webgpu });
    out({ case: 'webgpu: cpu in, cpu out', nodes, elems, ...(await timeIt(() => g1.run({ x }))) });
    await g1.release();
    const g2 = await ort.InferenceSession.create(model, { executionProviders: webgpu, preferredOutputLocation: 'gpu-buffer' });
    out({ case: 'webgpu: cpu in, gpu-buffer out (no readback)', nodes, elems, ...(await timeIt(async () => { const r = await g2.run({ x }); r.y.dispose(); })) });
    let last = (await g2.run({ x })).y;
    out({ case: 'webgpu: gpu-buffer in (previous output), gpu-buffer out', nodes, elems, ...(await timeIt(async () => { const r = await g2.run({ x: last }); last.dispose(); last = r.y; })) });
    // GPU input, CPU output: the decode-step pattern (KV cache on the GPU, logits read back). Reading a
    // 'gpu-buffer' output with getData() instead aborts the process in onnxruntime-node 1.30.
    const g3 = await ort.InferenceSession.create(model, { executionProviders: webgpu, preferredOutputLocation: { y: 'cpu' } });
    out({ case: 'webgpu: gpu-buffer in, cpu out (readback only)', nodes, elems, ...(await timeIt(() => g3.run({ x: last }))) });
    await g3.release();
    // Output bound to a preallocated GPU tensor (what an in-place KV cache needs).
    let a = (await g2.run({ x })).y; let b = (await g2.run({ x })).y;
    let bound = 'yes';
    try { await g2.run({ x: a }, { y: b }); } catch (e) { bound = `no: ${String(e.message).split('\n')[0]}`; }
    out({ case: 'webgpu: gpu-buffer output bound as fetch', nodes, elems, supported: bound, ...(bound === 'yes' ? await timeIt(async () => { await g2.run({ x: a }, { y: b }); [a, b] = [b, a]; }) : {}) });
    a.dispose(); b.dispose(); last.dispose();
    await g2.release();
  }
}
