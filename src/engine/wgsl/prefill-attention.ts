/// <reference types="@webgpu/types" />
// Which kernel runs a prompt's attention (T > 1 tokens), TPRUN_WGSL_PREFILL_ATTN:
//   (unset) or group  per KV head group (kernels/attention-group.ts): the default where the head size fits
//   block             per head and block of 8 queries (kernels/attention-prefill.ts), the kernel before
//   query             the decode kernel once per query (attention.ts), the first form
// A decode step (one token) always runs the decode kernels.

import { pipeline } from './kernels/common.js';
import { attentionGroupShader, groupGrid, pickGroupTile, type GroupTile } from './kernels/attention-group.js';

export interface GroupAttention {
  p: GPUComputePipeline;
  tile: GroupTile;
  /** Workgroups for a call of T tokens. */
  size: (T: number) => [number, number];
}

// One pipeline per device, head size, cache type and tile (every layer and KV cache of a rank shares it).
const made = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/**
 * The grouped prompt attention for this shape on `device`, with the attention bind group layout `bgl`
 * (the decode kernel's: same bindings); undefined where no tile fits the device (the caller keeps the
 * block kernel). `tile` overrides the default (the microbench compares them).
 */
export function groupAttention(device: GPUDevice, bgl: GPUBindGroupLayout, dims: { Hq: number; Hkv: number; D: number }, kv16: boolean, tile?: GroupTile): GroupAttention | undefined {
  const t = tile ?? pickGroupTile(dims.D, device.limits.maxComputeWorkgroupStorageSize, device.limits.maxComputeInvocationsPerWorkgroup);
  if (!t) return undefined;
  let byDevice = made.get(device);
  if (!byDevice) made.set(device, (byDevice = new Map()));
  const key = `${dims.D}.${kv16 ? 'f16' : 'f32'}.r${t.RB}.k${t.KT}.p${t.RPT ?? 4}`;
  let p = byDevice.get(key);
  if (!p) byDevice.set(key, (p = pipeline(device, attentionGroupShader(dims.D, kv16, t), bgl, `attention.group.${key}`)));
  return { p, tile: t, size: (T) => groupGrid(t, T, dims.Hq, dims.Hkv) };
}
