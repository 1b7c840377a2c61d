// Which execution provider a rank's sessions use, and on which GPU.
//
// GPU = onnxruntime's WebGPU provider (Dawn on Vulkan), bundled in onnxruntime-node for Linux x64.
// Its only handle on adapter choice from Node is the session config: `ep.webgpuexecutionprovider.deviceId`
// is a WebGPU *context* id, not an adapter index (a non-zero id needs a WGPUInstance/WGPUDevice made by
// the caller, which Node cannot make), so every session opens Dawn's default adapter: the first
// high-performance Vulkan device. The NVIDIA Vulkan driver ignores CUDA_VISIBLE_DEVICES. Hence:
//   - the adapter a rank wants is the GPU the launcher bound to it (CUDA_VISIBLE_DEVICES, one id),
//     else TPRUN_GPU_ADAPTER, else its local rank shared round-robin over the host's GPUs (as the
//     launcher's `--gpus auto` does);
//   - an adapter the host does not have is an input error naming the rank and the host's adapters;
//   - adapter 0 (all ranks of a one-GPU host) is what the provider opens; another existing adapter is
//     refused with the reason, rather than silently running on GPU 0.
//
// On the GPU the KV cache stays in GPU buffers between steps ('gpu-buffer' outputs fed back as inputs
// and bound in place); only logits and the partial sums that ranks all-reduce come to the host.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';
import { InputError } from '../checkpoint/errors.js';
import { Graph } from './graph.js';
import { WeightFile } from './weight-file.js';

export type DeviceRequest = 'cpu' | 'gpu' | 'auto';
export type Device = 'cpu' | 'gpu';

export interface HostGpu { index: number; name: string; uuid?: string; bus?: string }

export interface DeviceChoice {
  device: Device;
  /** The host GPU (nvidia-smi order) this rank runs on; only for 'gpu'. */
  adapter?: number;
  /** Why this device / adapter (for logs and errors). */
  reason: string;
  executionProviders: InferenceSession.SessionOptions['executionProviders'];
}

const NVIDIA_PROC = '/proc/driver/nvidia/gpus';

/** The host's NVIDIA GPUs in PCI bus order (nvidia-smi's order), from the driver's /proc entries. */
export function hostGpus(procDir = NVIDIA_PROC): HostGpu[] {
  if (!existsSync(procDir)) return [];
  const found: Omit<HostGpu, 'index'>[] = [];
  for (const bus of readdirSync(procDir).sort()) {
    let info = '';
    try { info = readFileSync(join(procDir, bus, 'information'), 'utf8'); } catch { continue; }
    const field = (k: string) => info.match(new RegExp(`^${k}:\\s*(.+)$`, 'm'))?.[1].trim();
    found.push({ name: field('Model') ?? 'NVIDIA GPU', uuid: field('GPU UUID'), bus: field('Bus Location') ?? bus });
  }
  return found.map((g, index) => ({ index, ...g }));
}

function localRank(env: NodeJS.ProcessEnv): number {
  return Number(env.TPRUN_LOCAL_RANK ?? env.LOCAL_RANK ?? env.OMPI_COMM_WORLD_LOCAL_RANK ?? env.SLURM_LOCALID ?? 0) || 0;
}

/**
 * The adapter this rank wants and whether it was asked for explicitly (a bound GPU or
 * TPRUN_GPU_ADAPTER) or derived from the local rank (shared round-robin when ranks outnumber GPUs).
 */
export function wantedAdapter(gpus: HostGpu[], env: NodeJS.ProcessEnv = process.env): { index: number; explicit: boolean; source: string } {
  const rankName = `rank ${env.TPRUN_RANK ?? env.RANK ?? 0}`;
  const explicit = env.TPRUN_GPU_ADAPTER ?? env.CUDA_VISIBLE_DEVICES;
  const source = env.TPRUN_GPU_ADAPTER !== undefined ? 'TPRUN_GPU_ADAPTER' : 'CUDA_VISIBLE_DEVICES';
  if (explicit !== undefined && explicit.trim() !== '') {
    const ids = explicit.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const id = ids[0];
    if (id === '-1') throw new InputError(`${rankName}: ${source}=${explicit} hides every GPU; use --device cpu`);
    let index = /^\d+$/.test(id) ? Number(id) : gpus.findIndex((g) => g.uuid === id);
    if (index < 0) throw new InputError(`${rankName}: ${source}=${explicit}: no GPU with that UUID on this host (${describe(gpus)})`);
    // A list (several GPUs visible to one rank): the rank uses the first, as CUDA would.
    return { index, explicit: true, source: `${source}=${explicit}` };
  }
  const lr = localRank(env);
  const n = Math.max(1, gpus.length);
  return { index: lr % n, explicit: false, source: `local rank ${lr}${lr >= n ? ` shares ${n} GPU(s)` : ''}` };
}

function describe(gpus: HostGpu[]): string {
  if (!gpus.length) return 'no NVIDIA GPU listed in /proc/driver/nvidia/gpus';
  return `${gpus.length} GPU(s): ${gpus.map((g) => `${g.index} ${g.name}${g.bus ? ` @${g.bus}` : ''}`).join(', ')}`;
}

let probed: Promise<string | null> | undefined;

/**
 * Opens a one-node graph on the WebGPU provider (CPU fallback of the node is impossible: it is the
 * only node and the session must place it on WebGPU): null when an adapter exists, else why not.
 */
export function probeWebGpu(): Promise<string | null> {
  probed ??= (async () => {
    if (process.platform !== 'linux' || process.arch !== 'x64') return `the WebGPU provider of onnxruntime-node is bundled for linux-x64 only (this is ${process.platform}-${process.arch})`;
    const ort = (await import('./ort.js')).default;
    try {
      const s = await ort.InferenceSession.create(identityModel(), {
        executionProviders: ['webgpu'],
        extra: { session: { disable_cpu_ep_fallback: '1' } },
        logSeverityLevel: 3,
      });
      await s.release();
      return null;
    } catch (e) {
      // ORT's message carries the failed check's source location first; keep the reason.
      return String((e as Error).message).split('\n')[0].replace(/^.*was false\.\s*/, '');
    }
  })();
  return probed;
}

/** Picks the device and, for the GPU, checks the adapter this rank wants (see the file comment). */
export async function chooseDevice(request: DeviceRequest, env: NodeJS.ProcessEnv = process.env): Promise<DeviceChoice> {
  if (request === 'cpu') return { device: 'cpu', reason: 'requested', executionProviders: ['cpu'] };
  const rankName = `rank ${env.TPRUN_RANK ?? env.RANK ?? 0}`;
  const gpus = hostGpus();
  const missing = await probeWebGpu();
  if (missing) {
    if (request === 'auto') return { device: 'cpu', reason: `auto: no WebGPU adapter (${missing})`, executionProviders: ['cpu'] };
    throw new InputError(`${rankName}: --device gpu but no WebGPU adapter is usable: ${missing}`);
  }
  const want = wantedAdapter(gpus, env);
  const count = Math.max(1, gpus.length); // the probe found one even where /proc lists none
  if (want.index >= count) {
    throw new InputError(`${rankName}: GPU adapter ${want.index} requested (${want.source}) but this host has ${describe(gpus)}`);
  }
  if (want.index !== 0) {
    throw new InputError(`${rankName}: GPU adapter ${want.index} requested (${want.source}), but onnxruntime-node's WebGPU provider opens only the default adapter 0 (its deviceId is a context id, and NVIDIA's Vulkan driver ignores CUDA_VISIBLE_DEVICES); run one rank per host or let ranks share GPU 0 with TPRUN_GPU_ADAPTER=0`);
  }
  return {
    device: 'gpu',
    adapter: 0,
    reason: `${want.source} → adapter 0${gpus[0] ? ` (${gpus[0].name}${gpus[0].bus ? ` @${gpus[0].bus}` : ''})` : ''}`,
    executionProviders: ['webgpu'],
  };
}

/**
 * Session options for a segment on `device`: on the GPU, the KV cache (`present.*`) and values the next
 * segment reads without an all-reduce (`residual`) stay in GPU buffers; everything else (logits, the
 * partial sums to all-reduce, calibration outputs) comes to the host.
 */
export function outputLocations(device: Device, outputNames: readonly string[]): InferenceSession.SessionOptions['preferredOutputLocation'] {
  if (device !== 'gpu') return undefined;
  const loc: Record<string, 'cpu' | 'gpu-buffer'> = {};
  for (const n of outputNames) loc[n] = n.startsWith('present.') || n === 'residual' ? 'gpu-buffer' : 'cpu';
  return loc;
}

/** The graph output names of an ONNX model (ModelProto.graph.output[].name), read without loading it. */
export function onnxOutputNames(model: Uint8Array): string[] {
  // Protobuf walk: ModelProto field 7 = graph; GraphProto field 12 = output; ValueInfoProto field 1 = name.
  const fields = (buf: Uint8Array, want: number): Uint8Array[] => {
    const found: Uint8Array[] = [];
    let i = 0;
    const varint = () => { let v = 0; let m = 1; for (;;) { const b = buf[i++]; v += (b & 127) * m; if (b < 128) return v; m *= 128; } };
    while (i < buf.length) {
      const key = varint();
      const wire = key % 8;
      if (wire === 0) varint();
      else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else if (wire === 2) { const n = varint(); if (Math.floor(key / 8) === want) found.push(buf.subarray(i, i + n)); i += n; }
      else throw new Error(`unexpected protobuf wire type ${wire}`);
    }
    return found;
  };
  const graph = fields(model, 7)[0];
  if (!graph) return [];
  return fields(graph, 12).map((vi) => Buffer.from(fields(vi, 1)[0] ?? []).toString('utf8'));
}

// y = Identity(x), float32 [1]: the smallest graph a provider must take to open a session.
function identityModel(): Uint8Array {
  const g = new Graph('webgpu_probe', 'float32', new WeightFile('none.bin'));
  g.node('Identity', [g.input('x', 'float32', [1])], ['y']);
  g.output('y', 'float32', [1]);
  return g.encode();
}
