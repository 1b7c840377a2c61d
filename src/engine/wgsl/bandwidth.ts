/// <reference types="@webgpu/types" />
// The bound `bench generate --kernels wgsl` reports: the device's READ bandwidth as a weight-streaming
// kernel sees it. A compute shader reads one buffer (1 GiB, or the largest binding the adapter allows) with
// 16-byte loads, several in flight per thread, and reduces them to one word per thread (kept, so the loads
// are not dead code); bytes read / time, the best of a few chains (long chain less short chain, so the
// submit and wait cost drops out). A buffer copy (what this measured before) counts read + written bytes
// at the copy engine's pace: it read 845 GB/s on the H200 where kernels stream ~4 TB/s, a "bound" that
// decode beat by 1.44x.

import { openWgslDevice } from './gpu.js';

const WG = 256;
/** 16-byte loads per thread per pass (issued before they are summed). */
const PER = 16;

const READ_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let threads = nw.x * ${WG}u;
  let n = arrayLength(&src);
  var v: array<vec4<u32>, ${PER}>;
  // Strided by the grid: neighbouring threads read neighbouring 16 bytes (coalesced).
  for (var j = 0u; j < ${PER}u; j++) { v[j] = src[min(g.x + j * threads, n - 1u)]; }
  var s = vec4<u32>(0u);
  for (var j = 0u; j < ${PER}u; j++) { s ^= v[j]; }
  dst[g.x] = s.x ^ s.y ^ s.z ^ s.w;
}`;

/** `mib`: the buffer read (capped by the adapter's largest binding). */
export async function wgslReadBandwidth(mib = 1024): Promise<{ gb_per_s: number; bytes: number }> {
  const { device, maxBinding } = await openWgslDevice();
  // At most 4 GiB: one grid row (65535 workgroups) covers it.
  const vecs = Math.floor(Math.min(Math.min(mib, 4096) * 2 ** 20, maxBinding) / (16 * WG * PER)) * WG * PER;
  const bytes = vecs * 16;
  const groups = vecs / (WG * PER);
  const src = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
  const dst = device.createBuffer({ size: groups * WG * 4, usage: GPUBufferUsage.STORAGE });
  const module = device.createShaderModule({ code: READ_WGSL, label: 'bandwidth.read' });
  const p = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: 'bandwidth.read' });
  const bg = device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }] });
  const time = async (n: number) => {
    const e = device.createCommandEncoder();
    const pass = e.beginComputePass();
    pass.setPipeline(p);
    pass.setBindGroup(0, bg);
    for (let i = 0; i < n; i++) pass.dispatchWorkgroups(groups);
    pass.end();
    const t0 = performance.now();
    device.queue.submit([e.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  try {
    await time(1); // compile, page in
    // The long chain lasts >= ~50 ms more than the short one, so timer and submit jitter stay small beside it.
    const n = Math.min(64, Math.max(4, Math.ceil(50 / Math.max(0.05, await time(1)))));
    let best = 0;
    for (let r = 0; r < 3; r++) {
      const short = await time(1);
      const long = await time(n + 1);
      best = Math.max(best, (n * bytes) / (Math.max(1e-3, long - short) / 1000) / 1e9);
    }
    return { gb_per_s: best, bytes };
  } finally {
    src.destroy();
    dst.destroy();
  }
}
