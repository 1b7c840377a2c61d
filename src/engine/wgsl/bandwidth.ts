/// <reference types="@webgpu/types" />
// The device's own copy bandwidth through the same Dawn device (a buffer-to-buffer copy inside GPU memory,
// bytes read + written, long chain less short chain): the bound `bench generate --kernels wgsl` reports,
// measured like torch's device-to-device copy rather than through an element-wise shader.

import { openWgslDevice } from './gpu.js';

export async function wgslCopyBandwidth(mib = 256): Promise<{ gb_per_s: number }> {
  const { device, maxBinding } = await openWgslDevice();
  const bytes = Math.min(mib << 20, Math.floor(maxBinding / 4) * 4);
  const S = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const a = device.createBuffer({ size: bytes, usage: S });
  const b = device.createBuffer({ size: bytes, usage: S });
  const time = async (n: number) => {
    const e = device.createCommandEncoder();
    for (let i = 0; i < n; i++) e.copyBufferToBuffer(i % 2 ? b : a, 0, i % 2 ? a : b, 0, bytes);
    const t0 = performance.now();
    device.queue.submit([e.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  try {
    await time(2);
    const short = Math.min(await time(2), await time(2));
    const long = Math.min(await time(12), await time(12));
    const ms = Math.max(1e-3, long - short);
    return { gb_per_s: (10 * 2 * bytes) / (ms / 1000) / 1e9 };
  } finally {
    a.destroy();
    b.destroy();
  }
}
