/// <reference types="@webgpu/types" />
// Opens this rank's WebGPU device through Dawn's Node binding (npm `webgpu`), for the hand-written
// kernels of --kernels wgsl.
//
// The adapter is chosen below Dawn, in the Vulkan loader, exactly as for onnxruntime's provider
// (device.ts bindGpu: Mesa's device-select layer shows the rank only its GPU); the binding must be in
// the environment before Dawn creates its instance, so it runs first, and the adapter Dawn then
// returns is checked against the device the binding named.

import { InputError } from '../../core/errors.js';
import { bindGpu } from '../device.js';
import { gemvShapes, prefillAttention, prefillSubmitEvery } from './variants.js';
import { sgmatShader, type SgmatConfig } from './kernels/gemm.js';
import { onOff } from '../../util/env.js';

export interface WgslDevice {
  device: GPUDevice;
  /** The adapter as Dawn describes it (for logs and the bench record). */
  adapter: string;
  /** Largest storage binding, and whether subgroup operations are enabled on the device. */
  maxBinding: number;
  subgroups: boolean;
  /** Whether the KV cache is float16 ('shader-f16' on the adapter, unless TPRUN_WGSL_KV=float32). */
  kv16: boolean;
  /** Whether 'timestamp-query' is enabled (only with TPRUN_WGSL_PROFILE, see profile.ts). */
  timestamps: boolean;
  /** Dawn's instance: it must outlive the device (once collected, the device's callbacks never fire, and a
   *  GC while the device works crashes the process: scripts/gpu/subgroup-matrix.mjs lost it that way). */
  instance: GPU;
  /** The subgroup-matrix shape the prefill GEMM uses (TPRUN_WGSL_PREFILL=sgmat|sgmat2|auto where offered), else undefined. */
  sgmat?: SgmatConfig;
}

let opened: Promise<WgslDevice> | undefined;

function rankName(env: NodeJS.ProcessEnv): string {
  return `rank ${env.TPRUN_RANK ?? env.RANK ?? env.OMPI_COMM_WORLD_RANK ?? env.SLURM_PROCID ?? 0}`;
}

/** The device (one per process; later calls share it). */
export function openWgslDevice(env: NodeJS.ProcessEnv = process.env): Promise<WgslDevice> {
  opened ??= open(env);
  return opened;
}

// Dawn writes two notes on stderr when it caps its dynamic-offset limits ("... artificially reduced
// ..."), which are about render limits tprun never uses; everything else it writes passes through.
function quietDawnNotes(): () => void {
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const s = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (/artificially reduced from/.test(s)) return true;
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  return () => { process.stderr.write = write; };
}

async function open(env: NodeJS.ProcessEnv): Promise<WgslDevice> {
  const who = rankName(env);
  const bound = await bindGpu(env);
  let mod: { create: (o: string[]) => GPU; globals: object };
  try {
    mod = await import('webgpu') as never;
  } catch (e) {
    throw new InputError(`${who}: --kernels wgsl needs Dawn's Node binding (npm webgpu): ${(e as Error).message.split('\n')[0]}`);
  }
  // Dawn's classes (GPUBufferUsage, GPUMapMode, ...) are what the WebGPU spec puts on globalThis.
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  const restore = quietDawnNotes();
  try {
    // Profiling: Dawn quantizes timestamps unless told not to (a toggle it may not know is ignored).
    const profiling = !!env.TPRUN_WGSL_PROFILE;
    // On NVIDIA Dawn's Vulkan backend hides 'shader-f16' (the driver lacks storageInputOutput16, which only
    // vertex/fragment IO needs) unless vulkan_enable_f16_on_nvidia: seen on the H200, without it there is no
    // float16 KV cache and the only subgroup-matrix shapes listed are u8/i8. Compute shaders never use f16
    // stage IO, so the toggle is always on; elsewhere it does nothing. Subgroup matrices are experimental
    // (allow_unsafe_apis): only a prefill that may use them, or profiling, asks for that.
    const sgmode = gemvShapes(env).prefill.sgmat;
    prefillAttention(env); // a bad knob is refused before Dawn starts
    prefillSubmitEvery(env);
    const enable = [...(profiling || sgmode ? ['allow_unsafe_apis'] : []), 'vulkan_enable_f16_on_nvidia'];
    const gpu = mod.create([`enable-dawn-features=${enable.join(',')}`, ...(profiling ? ['disable-dawn-features=timestamp_quantization'] : [])]);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new InputError(`${who}: --kernels wgsl but Dawn finds no WebGPU adapter (no Vulkan device${env.VK_DRIVER_FILES || env.VK_ICD_FILENAMES ? ` with VK_DRIVER_FILES=${env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES}` : ''})`);
    const info = adapter.info;
    const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
    checkBinding(who, bound.adapter, info);
    const subgroups = adapter.features.has('subgroups') && onOff('TPRUN_WGSL_SUBGROUPS');
    const sg = sgmode ? sgmatConfig(adapter) : undefined;
    if (typeof sg === 'string' && sgmode !== 'auto') throw new InputError(`${who}: TPRUN_WGSL_PREFILL=${env.TPRUN_WGSL_PREFILL}: ${name || 'the adapter'} ${sg}; use tiled, or auto to fall back`);
    const sgmat = typeof sg === 'object' ? sg : undefined;
    const sgFeatures = sgmat ? ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'] : [];
    const timestamps = profiling && adapter.features.has('timestamp-query');
    const kvEnv = env.TPRUN_WGSL_KV ?? 'float16';
    if (kvEnv !== 'float16' && kvEnv !== 'float32') throw new InputError(`TPRUN_WGSL_KV=${kvEnv}: float16 or float32`);
    // Without shader-f16 (an adapter lacking 16-bit storage) the cache stays float32: its bytes say so.
    const kv16 = kvEnv === 'float16' && adapter.features.has('shader-f16');
    if (profiling && !timestamps) process.stderr.write(`tprun: ${who}: note: TPRUN_WGSL_PROFILE but ${name} has no 'timestamp-query'; no profile\n`);
    const lim = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures: [...new Set([...(subgroups ? ['subgroups'] : []), ...sgFeatures, ...(timestamps ? ['timestamp-query'] : []), ...(kv16 ? ['shader-f16'] : [])])] as GPUFeatureName[],
      requiredLimits: {
        maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
        maxBufferSize: lim.maxBufferSize,
        maxStorageBuffersPerShaderStage: Math.min(lim.maxStorageBuffersPerShaderStage, 10),
        maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: Math.min(lim.maxComputeInvocationsPerWorkgroup, 256),
        maxComputeWorkgroupSizeX: Math.min(lim.maxComputeWorkgroupSizeX, 256),
        maxComputeWorkgroupsPerDimension: lim.maxComputeWorkgroupsPerDimension,
      },
    });
    device.addEventListener('uncapturederror', (ev) => {
      process.stderr.write(`tprun: ${who}: WebGPU error: ${(ev as GPUUncapturedErrorEvent).error.message.split('\n')[0]}\n`);
    });
    return { device, adapter: name || 'WebGPU adapter', maxBinding: Math.min(lim.maxStorageBufferBindingSize, lim.maxBufferSize), subgroups, kv16, timestamps, instance: gpu, sgmat };
  } finally {
    restore();
  }
}

// A rank bound to one device must get that device: the layer falls back silently to the default one.
// Dawn's adapter info has no PCI or vendor:device ids, so it is matched by kind and name: a CPU device
// (lavapipe) where a GPU was bound, or the reverse, is refused; another name is reported (Dawn writes
// `info.device` as the Vulkan device name lower-cased with runs of other characters as '-').
function checkBinding(who: string, wanted: string | undefined, info: GPUAdapterInfo): void {
  if (!wanted) return;
  const m = /^(.*) \([0-9a-f]+:[0-9a-f]+ ([A-Za-z]+)/i.exec(wanted);
  if (!m) return;
  const [, name, type] = m;
  const dawnCpu = info.architecture === 'software' || /llvmpipe|lavapipe|swiftshader/i.test(`${info.device} ${info.description}`);
  const wantCpu = type === 'CPU';
  const got = info.description || info.device || info.vendor;
  if (dawnCpu !== wantCpu) throw new InputError(`${who}: bound to ${wanted} but Dawn opened ${got}: the device-select layer did not apply`);
  const norm = (x: string) => x.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  if (info.device && norm(info.device) !== norm(name)) process.stderr.write(`tprun: ${who}: note: bound to ${wanted}; Dawn names its adapter ${got}\n`);
}

interface SubgroupMatrixInfo { componentType: string; resultComponentType: string; M: number; N: number; K: number }

/**
 * The subgroup-matrix shape for the prefill GEMM: f16 operands, f32 results (16x16x16 where offered: it is
 * what NVIDIA's tensor cores run natively, and square, so WGSL's type-parameter order cannot matter), else
 * the largest; or why there is none. The kernel assumes a fixed subgroup size (4 subgroups per workgroup).
 */
export function sgmatConfig(adapter: GPUAdapter): SgmatConfig | string {
  const f = adapter.features;
  if (!f.has('chromium-experimental-subgroup-matrix')) return "has no subgroup matrices (Dawn's 'chromium-experimental-subgroup-matrix' feature)";
  if (!f.has('shader-f16')) return "has no 'shader-f16'";
  if (!f.has('subgroups')) return "has no 'subgroups'";
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number; subgroupMatrixConfigs?: SubgroupMatrixInfo[] };
  const sg = info.subgroupMaxSize ?? 0;
  if (!sg || info.subgroupMinSize !== sg) return `has no fixed subgroup size (${info.subgroupMinSize}..${sg})`;
  const all = info.subgroupMatrixConfigs ?? [];
  const ok = all.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
    .map((c) => ({ M: c.M, N: c.N, K: c.K, sg }))
    .filter((c) => { try { return !!sgmatShader('store', c); } catch { return false; } }) // a shape the tiling fits
    .sort((a, b) => Number(b.M === 16 && b.N === 16 && b.K === 16) - Number(a.M === 16 && a.N === 16 && a.K === 16) || b.M * b.N * b.K - a.M * a.N * a.K);
  if (!ok.length) return `offers no f16 -> f32 subgroup-matrix shape (it offers: ${all.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(', ') || 'none'})`;
  return ok[0];
}
