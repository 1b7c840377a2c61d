// Run as a rank (tprun -n N -- node scripts/gpu/adapters.mjs): binds this rank to its GPU the way an
// engine does (src/engine/device.ts chooseDevice), then shows from inside the rank which Vulkan device
// the WebGPU provider got: the device-select layer's listing of what this process can see (one device
// when bound) and the time of a float32 MatMul chain on it (a GPU and lavapipe differ by orders of
// magnitude). One JSON line {check: 'adapter', ...}; exit 2 with the one-line refusal where binding fails.
import ort from 'onnxruntime-node';
import { chooseDevice, listVulkanDevices } from '../../dist/engine/device.js';
import { Graph } from '../../dist/engine/graph.js';
import { WeightFile } from '../../dist/engine/weight-file.js';

const rank = Number(process.env.TPRUN_RANK ?? 0);
const out = (o) => process.stdout.write(`${JSON.stringify({ check: 'adapter', rank, ...o })}\n`);
let choice;
try {
  choice = await chooseDevice('gpu');
} catch (e) {
  out({ ok: false, exitCode: e.exitCode, error: e.message });
  process.exit(e.exitCode ?? 1);
}
// What this process sees now, through the same layer and environment (FORCE_DEFAULT_DEVICE: one device).
const visible = await listVulkanDevices({ ...process.env, MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' });
const env = Object.fromEntries(['TPRUN_GPU', 'CUDA_VISIBLE_DEVICES', 'DRI_PRIME', 'MESA_VK_DEVICE_SELECT', 'MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE']
  .filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));

// y = x·W1·W2·…·W8, x 256×1024, W 1024×1024, float32: 4.3 GFLOP per run.
const n = 1024;
const m = 256;
const g = new Graph('mm', 'float32', new WeightFile('none.bin'));
let x = g.input('x', 'float32', [m, n]);
for (let i = 0; i < 8; i++) {
  const w = g.input(`w${i}`, 'float32', [n, n]);
  const y = i === 7 ? 'y' : `h${i}`;
  g.node('MatMul', [x, w], [y]);
  x = y;
}
g.output('y', 'float32', [m, n]);
const s = await ort.InferenceSession.create(g.encode(), { executionProviders: choice.executionProviders, extra: { session: { disable_cpu_ep_fallback: '1' } }, logSeverityLevel: 3 });
const feeds = { x: new ort.Tensor('float32', new Float32Array(m * n).fill(1 / n), [m, n]) };
for (let i = 0; i < 8; i++) feeds[`w${i}`] = new ort.Tensor('float32', new Float32Array(n * n).fill(1 / n), [n, n]);
await s.run(feeds); // compile
const reps = 3;
const t0 = performance.now();
let r;
for (let i = 0; i < reps; i++) r = await s.run(feeds);
const ms = (performance.now() - t0) / reps;
out({
  ok: true, device: choice.device, adapter: choice.adapter ?? null, reason: choice.reason, env,
  visible: visible?.map((d) => `${d.vendorDevice} ${d.name} (${d.type}${d.pci ? ` @${d.pci}` : ''})`) ?? null,
  matmul_ms: +ms.toFixed(2), gflop_per_s: +((8 * 2 * m * n * n) / (ms * 1e6)).toFixed(1), y00: r.y.data[0],
});
await s.release();

// --hold-mib N: the physical GPU, seen from outside. Two identical GPUs look alike from inside a rank (same
// name, same speed), so the rank also opens tprun's own WGSL device (the same binding), fills (rank + 1)·N
// MiB there and holds it for a few seconds: nvidia-smi's per-GPU memory.used, read meanwhile by
// adapters.sh, then shows which GPU holds which rank's bytes.
const hold = process.argv.indexOf('--hold-mib');
if (hold > 0) {
  const { openWgslDevice } = await import('../../dist/engine/wgsl/gpu.js');
  const gpu = await openWgslDevice();
  const mib = (rank + 1) * Number(process.argv[hold + 1]);
  const bufs = [];
  for (let left = mib; left > 0; left -= 256) {
    const size = Math.min(256, left) * 2 ** 20;
    const b = gpu.device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    gpu.device.queue.writeBuffer(b, 0, new Uint8Array(size).fill(1));
    bufs.push(b);
  }
  await gpu.device.queue.onSubmittedWorkDone();
  process.stdout.write(`${JSON.stringify({ check: 'holding', rank, mib, adapter: gpu.adapter })}\n`);
  await new Promise((r) => setTimeout(r, 4000));
  for (const b of bufs) b.destroy();
}
