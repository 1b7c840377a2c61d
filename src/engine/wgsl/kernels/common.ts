/// <reference types="@webgpu/types" />
// What every kernel module shares: the per-call uniform (`Step`) and small helpers to build pipelines
// and uniform buffers.

/** Per submitted forward: tokens in this call, position of the first, batch row (KV cache slot), cache capacity. */
export const STEP_WGSL = /* wgsl */ `
struct Step { T: u32, pos0: u32, row: u32, cap: u32 }
`;
export const STEP_BYTES = 16;

/** Binding kinds, in binding order: a uniform, a read-only storage buffer, a read-write one. */
export type Slot = 'u' | 'r' | 'w';

/** An explicit layout, so that one bind group serves every variant of a kernel (decode and prefill tiles). */
export function layout(device: GPUDevice, slots: Slot[], label: string): GPUBindGroupLayout {
  return device.createBindGroupLayout({
    label,
    entries: slots.map((s, binding) => ({
      binding,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: s === 'u' ? 'uniform' : s === 'r' ? 'read-only-storage' : 'storage' } as GPUBufferBindingLayout,
    })),
  });
}

export function pipeline(device: GPUDevice, code: string, bgl: GPUBindGroupLayout, label: string): GPUComputePipeline {
  const module = device.createShaderModule({ code, label });
  return device.createComputePipeline({ layout: device.createPipelineLayout({ bindGroupLayouts: [bgl] }), compute: { module, entryPoint: 'main' }, label });
}

/** A uniform buffer of 32-bit words (numbers marked `f` are written as f32, the rest as u32). */
export function uniform(device: GPUDevice, words: (number | { f: number })[], label: string): GPUBuffer {
  const n = Math.max(4, Math.ceil(words.length / 4) * 4);
  const buf = new ArrayBuffer(n * 4);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  words.forEach((w, i) => { if (typeof w === 'number') u[i] = w; else f[i] = w.f; });
  const b = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label });
  device.queue.writeBuffer(b, 0, buf);
  return b;
}

export function bindGroup(device: GPUDevice, bgl: GPUBindGroupLayout, buffers: GPUBuffer[], label: string): GPUBindGroup {
  return device.createBindGroup({ layout: bgl, entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })), label });
}

/** One dispatch as recorded each call: pipeline, bind group, and workgroup counts (a function of the call's token count). */
export interface Dispatch {
  p: (T: number) => GPUComputePipeline;
  g: GPUBindGroup;
  size: (T: number) => [number, number?, number?];
  /** Kind, for the GPU time profile. */
  name?: string;
  /** Recorded only in decode calls (one token) or only in prefill calls (several): RMSNorm is fused into the decode GEMV. */
  only?: 'decode' | 'prefill';
}

/** Whether `d` runs in a call of T tokens. */
export function runs(d: Dispatch, T: number): boolean {
  return !d.only || (d.only === 'decode') === (T === 1);
}

/** Records `d` into `pass` if it runs in a call of T tokens; returns whether it did. */
export function record(pass: GPUComputePassEncoder, d: Dispatch, T: number): boolean {
  if (!runs(d, T)) return false;
  pass.setPipeline(d.p(T));
  pass.setBindGroup(0, d.g);
  const [x, y, z] = d.size(T);
  pass.dispatchWorkgroups(x, y ?? 1, z ?? 1);
  return true;
}
