const { openWgslDevice } = await import('../../dist/engine/wgsl/gpu.js');
const gpu = await openWgslDevice();
const dev = gpu.device;
const src = dev.createBuffer({ size: 1 << 20, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
const rd = dev.createBuffer({ size: 1 << 20, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const t = [];
for (const size of [8192, 1 << 20]) { t.length = 0; for (let i = 0; i < 200; i++) {
  const t0 = performance.now();
  const enc = dev.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, rd, 0, size);
  dev.queue.submit([enc.finish()]);
  await rd.mapAsync(GPUMapMode.READ, 0, size);
  const d = new Float32Array(rd.getMappedRange(0, size).slice(0)); rd.unmap();
  dev.queue.writeBuffer(src, 0, d);
  t.push(performance.now() - t0);
}
t.sort((a, b) => a - b);
console.log(JSON.stringify({ size, adapter: gpu.adapter, p50_us: Math.round(t[100] * 1000), p10_us: Math.round(t[20] * 1000), p90_us: Math.round(t[180] * 1000) }));
}
process.exit(0);
