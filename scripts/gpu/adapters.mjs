// Adapter binding checks on the GPU machine (JSON lines): which GPUs the host has, which adapter each
// rank environment resolves to, that a missing adapter is a clear error, and what onnxruntime-node does
// with the WebGPU provider's deviceId (a context id, not an adapter index).
import ort from 'onnxruntime-node';
import { chooseDevice, hostGpus } from '../../dist/engine/device.js';
import { Graph } from '../../dist/engine/graph.js';
import { WeightFile } from '../../dist/engine/weight-file.js';

const out = (o) => process.stdout.write(`${JSON.stringify({ check: 'adapter', ...o })}\n`);
out({ case: 'host GPUs (/proc/driver/nvidia/gpus)', gpus: hostGpus() });
const cases = [
  ['rank 0, no binding', { TPRUN_RANK: '0', TPRUN_LOCAL_RANK: '0' }],
  ['rank 0 bound by the launcher', { TPRUN_RANK: '0', TPRUN_LOCAL_RANK: '0', CUDA_VISIBLE_DEVICES: '0' }],
  ['rank 1 of 2 on a one-GPU host, launcher --gpus auto (shares GPU 0)', { TPRUN_RANK: '1', TPRUN_LOCAL_RANK: '1', CUDA_VISIBLE_DEVICES: '0' }],
  ['rank 1, no binding (local rank 1, shared round-robin)', { TPRUN_RANK: '1', TPRUN_LOCAL_RANK: '1' }],
  ['rank 1 bound to GPU 1 (missing here)', { TPRUN_RANK: '1', TPRUN_LOCAL_RANK: '1', CUDA_VISIBLE_DEVICES: '1' }],
  ['TPRUN_GPU_ADAPTER=3 (missing here)', { TPRUN_GPU_ADAPTER: '3' }],
  ['unknown GPU UUID', { CUDA_VISIBLE_DEVICES: 'GPU-00000000-0000-0000-0000-000000000000' }],
];
for (const [name, env] of cases) {
  try {
    const c = await chooseDevice('gpu', env);
    out({ case: name, ok: true, device: c.device, adapter: c.adapter, reason: c.reason });
  } catch (e) {
    out({ case: name, ok: false, exitCode: e.exitCode, error: e.message });
  }
}
const g = new Graph('p', 'float32', new WeightFile('none.bin'));
g.node('Identity', [g.input('x', 'float32', [1])], ['y']);
g.output('y', 'float32', [1]);
const model = g.encode();
const tries = [
  ['executionProviders [{name: webgpu, deviceId: 1}]', { executionProviders: [{ name: 'webgpu', deviceId: 1 }] }],
  ['extra ep.webgpuexecutionprovider.deviceId = 1', { executionProviders: ['webgpu'], extra: { ep: { webgpuexecutionprovider: { deviceId: '1' } } } }],
  ['extra ep.webgpuexecutionprovider.deviceId = 0', { executionProviders: ['webgpu'], extra: { ep: { webgpuexecutionprovider: { deviceId: '0' } } } }],
  ['extra powerPreference low-power', { executionProviders: ['webgpu'], extra: { ep: { webgpuexecutionprovider: { powerPreference: 'low-power' } } } }],
];
for (const [name, opts] of tries) {
  try {
    const s = await ort.InferenceSession.create(model, { ...opts, extra: { ...(opts.extra ?? {}), session: { disable_cpu_ep_fallback: '1' } } });
    const r = await s.run({ x: new ort.Tensor('float32', Float32Array.of(7), [1]) });
    out({ case: name, opened: true, y: r.y.data[0] });
    await s.release();
  } catch (e) {
    out({ case: name, opened: false, error: String(e.message).split('\n')[0].slice(0, 300) });
  }
}
