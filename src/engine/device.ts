// Which execution provider a rank's sessions use, and on which GPU.
//
// GPU = onnxruntime's WebGPU provider (Dawn on Vulkan), bundled in onnxruntime-node for Linux x64.
// Its only handle on adapter choice from Node is the session config: `ep.webgpuexecutionprovider.deviceId`
// is a WebGPU *context* id, not an adapter index, so every session opens Dawn's default adapter, and
// the NVIDIA Vulkan driver ignores CUDA_VISIBLE_DEVICES. The choice is therefore made below ORT, in the
// Vulkan loader: Mesa's device-select layer (mesa-vulkan-drivers) shows the process one device alone
// (src/launcher/gpus.ts deviceSelectEnv). A rank:
//   - takes the device it is bound to: DRI_PRIME / MESA_VK_DEVICE_SELECT already set (the launcher
//     sets them for its local ranks), else TPRUN_GPU_ADAPTER, TPRUN_GPU (the launcher's --gpus id),
//     CUDA_VISIBLE_DEVICES (Slurm, mpirun wrappers; a list is shared by local rank), else its local
//     rank round-robin over the host's GPUs where there are several;
//   - sets the layer's environment in its own process before the first WebGPU session (the Vulkan
//     loader reads it when Dawn creates its instance), which also covers ranks started by mpirun/srun;
//   - checks, in a child process that lists the Vulkan devices through the layer, that the device
//     exists and the layer loaded: the layer itself falls back silently to the default device;
//   - refuses in one line where it cannot bind. With one GPU and no layer there is nothing to choose:
//     the rank runs on the default adapter as before.
//
// On the GPU the KV cache stays in GPU buffers between steps ('gpu-buffer' outputs fed back as inputs
// and bound in place); only logits and the partial sums that ranks all-reduce come to the host.

import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { InferenceSession } from 'onnxruntime-node';
import { InputError } from '../core/errors.js';
import { jsonObject } from '../util/env.js';
import type { World } from '../rank/types.js';
import { deviceSelectEnv, describeGpus, GpuSpecError, hostGpus, normalPci, vulkanTarget, type HostGpu, type VulkanTarget } from '../launcher/gpus.js';
import { traceSpan } from '../util/trace.js';
import { Graph } from './graph.js';
import { WeightFile } from './weight-file.js';

export { hostGpus, type HostGpu } from '../launcher/gpus.js';

export type DeviceRequest = 'cpu' | 'gpu' | 'auto';
export type Device = 'cpu' | 'gpu';

export interface DeviceChoice {
  device: Device;
  /** The Vulkan device this rank was bound to (name, ids, bus), where it was bound. */
  adapter?: string;
  /** Why this device / adapter (for logs and errors). */
  reason: string;
  executionProviders: InferenceSession.SessionOptions['executionProviders'];
}

/** A rank's GPU binding: the device, where the wish came from, and the layer environment that selects it. */
export interface GpuBinding { target: VulkanTarget; source: string; env: Record<string, string>; onlyGpu: boolean }

function localRank(env: NodeJS.ProcessEnv): number {
  return Number(env.TPRUN_LOCAL_RANK ?? env.LOCAL_RANK ?? env.OMPI_COMM_WORLD_LOCAL_RANK ?? env.SLURM_LOCALID ?? 0) || 0;
}

function rankName(env: NodeJS.ProcessEnv): string {
  return `rank ${env.TPRUN_RANK ?? env.RANK ?? env.OMPI_COMM_WORLD_RANK ?? env.SLURM_PROCID ?? 0}`;
}

/**
 * The device this rank is bound to (see the file comment for the order), or undefined where nothing
 * needs choosing (no binding on a host with at most one NVIDIA GPU). Throws an InputError where the
 * binding names no device of this host.
 */
export function gpuBinding(env: NodeJS.ProcessEnv = process.env, gpus: HostGpu[] = hostGpus()): GpuBinding | undefined {
  const who = rankName(env);
  const bound = (target: VulkanTarget, source: string, onlyGpu = false): GpuBinding =>
    ({ target, source, onlyGpu, env: { ...deviceSelectEnv(target), ...(env.MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE ? { MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: env.MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE } : {}) } });
  // Already selected (by the launcher, or by hand): the layer's own variables, in the layer's order.
  const sel = env.MESA_VK_DEVICE_SELECT?.trim();
  if (sel && sel !== 'list') {
    const m = /^([0-9a-fA-F]+):([0-9a-fA-F]+)!?$/.exec(sel);
    if (!m) throw new InputError(`${who}: MESA_VK_DEVICE_SELECT=${sel}: not a Vulkan vendor:device id such as 10de:2335`);
    return bound({ vendorDevice: `${m[1]}:${m[2]}`.toLowerCase(), name: `Vulkan device ${sel}` }, `MESA_VK_DEVICE_SELECT=${sel}`);
  }
  const prime = /^pci-([0-9a-fA-F]{4})_([0-9a-fA-F]{2})_([0-9a-fA-F]{2})_([0-7])!?$/.exec(env.DRI_PRIME?.trim() ?? '');
  if (prime) {
    const pci = normalPci(`${prime[1]}:${prime[2]}:${prime[3]}.${prime[4]}`)!;
    return bound({ pci, name: gpus.find((g) => g.bus === pci)?.name ?? `PCI ${pci}` }, `DRI_PRIME=${env.DRI_PRIME}`);
  }
  const name = env.TPRUN_GPU_ADAPTER !== undefined ? 'TPRUN_GPU_ADAPTER' : env.TPRUN_GPU !== undefined ? 'TPRUN_GPU' : 'CUDA_VISIBLE_DEVICES';
  const value = env[name]?.trim();
  if (value) {
    const ids = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (ids.includes('-1')) throw new InputError(`${who}: ${name}=${value} hides every GPU; use --device cpu`);
    // A list shared by the ranks of a node (srun --gpus-per-node, a wrapper exporting all GPUs): by local rank.
    const pos = localRank(env) % ids.length;
    let id = ids[pos];
    let source = `${name}=${value}`;
    // Slurm renumbers CUDA_VISIBLE_DEVICES from 0 where its cgroup hides the other GPUs, while the driver's
    // list (and PCI addresses) stay the host's: SLURM_STEP_GPUS holds the host indices, in the same order.
    const slurm = (env.SLURM_STEP_GPUS ?? env.SLURM_JOB_GPUS)?.split(',').map((s) => s.trim());
    if (name === 'CUDA_VISIBLE_DEVICES' && slurm?.length === ids.length && slurm.every((s) => /^\d+$/.test(s)) && /^\d+$/.test(id)) {
      id = slurm[pos];
      source += ` (host GPU ${id} by ${env.SLURM_STEP_GPUS !== undefined ? 'SLURM_STEP_GPUS' : 'SLURM_JOB_GPUS'})`;
    }
    // Index 0 where the driver lists no GPU (lavapipe, another vendor): the default adapter, as ever.
    if (gpus.length === 0 && id === '0') return undefined;
    let target: VulkanTarget;
    try {
      target = vulkanTarget(id, gpus, `${who}: ${source}`);
    } catch (e) {
      if (e instanceof GpuSpecError) throw new InputError(e.message);
      throw e;
    }
    const only = gpus.length === 1 && 'pci' in target && target.pci === gpus[0].bus;
    return bound(target, source, only);
  }
  if (gpus.length < 2) return undefined;
  const lr = localRank(env);
  const g = gpus[lr % gpus.length];
  return bound({ pci: g.bus!, name: g.name }, `local rank ${lr}${lr >= gpus.length ? ` shares ${gpus.length} GPUs` : ''}`);
}

/** A Vulkan device as Mesa's device-select layer lists it. */
export interface VulkanDevice { index: number; vendorDevice: string; name: string; type: string; pci?: string }

/** Parses the layer's listing (`  GPU 0: 10de:2335 "NVIDIA H200" discrete GPU 0000:00:06.0`); undefined where it printed none. */
export function parseDeviceList(stderr: string): VulkanDevice[] | undefined {
  if (!/^selectable devices:/m.test(stderr)) return undefined;
  const out: VulkanDevice[] = [];
  for (const m of stderr.matchAll(/^\s*GPU (\d+): ([0-9a-fA-F]+):([0-9a-fA-F]+) "(.*)" (other|integrated GPU|discrete GPU|virtual GPU|CPU)(?: ([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]))?\s*$/gm)) {
    const index = Number(m[1]);
    if (out.some((d) => d.index === index)) continue; // Dawn may enumerate twice
    out.push({ index, vendorDevice: `${m[2]}:${m[3]}`.toLowerCase(), name: m[4], type: m[5], ...(m[6] ? { pci: m[6].toLowerCase() } : {}) });
  }
  return out;
}

/**
 * The Vulkan devices this process would see, listed by the device-select layer itself
 * (MESA_VK_DEVICE_SELECT=list makes it print them and exit at Dawn's first enumeration) in a child
 * process with `env`; undefined where the layer did not load there.
 */
export async function listVulkanDevices(env: NodeJS.ProcessEnv = process.env): Promise<VulkanDevice[] | undefined> {
  const ortMain = createRequire(import.meta.url).resolve('onnxruntime-node');
  const model = Buffer.from(identityModel()).toString('base64');
  const script = `const ort = (await import(${JSON.stringify(pathToFileURL(ortMain).href)})).default;
    await ort.InferenceSession.create(Buffer.from(${JSON.stringify(model)}, 'base64'), { executionProviders: ['webgpu'], logSeverityLevel: 4 }).catch(() => {});`;
  const stderr = await new Promise<string>((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...env, MESA_VK_DEVICE_SELECT: 'list' }, timeout: 120_000, maxBuffer: 1 << 20 },
      (_err, _out, err) => resolve(String(err ?? '')));
  });
  return parseDeviceList(stderr);
}

/** Where the Vulkan loader looks for layer manifests (loader's LoaderLayerInterface.md), for the device-select one. */
export function deviceSelectLayerManifest(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs: string[] = [];
  for (const v of [env.VK_LAYER_PATH, env.VK_ADD_LAYER_PATH, env.VK_IMPLICIT_LAYER_PATH, env.VK_ADD_IMPLICIT_LAYER_PATH]) if (v) dirs.push(...v.split(':'));
  const data = [env.XDG_DATA_HOME ?? join(homedir(), '.local/share'), ...(env.XDG_DATA_DIRS ?? '/usr/local/share:/usr/share').split(':')];
  for (const base of ['/etc', ...data]) for (const kind of ['implicit_layer.d', 'explicit_layer.d']) dirs.push(join(base, 'vulkan', kind));
  for (const d of dirs) {
    if (!d || !existsSync(d)) continue;
    let files: string[] = [];
    try { files = d.endsWith('.json') ? [d] : readdirSync(d).filter((f) => f.endsWith('.json')).map((f) => join(d, f)); } catch { continue; }
    for (const f of files) {
      try { if (readFileSync(f, 'utf8').includes('"VK_LAYER_MESA_device_select"')) return f; } catch { /* unreadable: not it */ }
    }
  }
  return undefined;
}

function describeDevices(devs: VulkanDevice[]): string {
  if (!devs.length) return 'none';
  return devs.map((d) => `${d.vendorDevice} "${d.name}" ${d.type}${d.pci ? ` @${d.pci}` : ''}`).join('; ');
}

function targetText(t: VulkanTarget): string {
  return 'pci' in t ? (t.name === `PCI ${t.pci}` ? t.name : `${t.name} @${t.pci}`) : t.vendorDevice;
}

/**
 * Binds this process to its GPU (see the file comment): sets the layer's environment in `env` and
 * checks that the device exists. Returns a description of the bound device, or undefined where the
 * rank runs on the default adapter. Must run before the first WebGPU session of the process.
 */
export async function bindGpu(env: NodeJS.ProcessEnv = process.env, gpus: HostGpu[] = hostGpus()): Promise<{ adapter?: string; reason: string }> {
  const who = rankName(env);
  const b = gpuBinding(env, gpus);
  if (!b) return { reason: gpus.length ? `one GPU (${gpus[0].name}): default adapter` : 'default adapter' };
  if (b.onlyGpu && !deviceSelectLayerManifest(env)) {
    return { reason: `${b.source} → ${targetText(b.target)}, the host's only GPU: default adapter (no device-select layer)` };
  }
  const devs = await listVulkanDevices({ ...env, ...b.env });
  if (!devs) {
    throw new InputError(`${who}: cannot bind ${targetText(b.target)} (${b.source}): Mesa's device-select Vulkan layer (VK_LAYER_MESA_device_select, Debian package mesa-vulkan-drivers) did not load${env.NODEVICE_SELECT ? ` (NODEVICE_SELECT=${env.NODEVICE_SELECT} disables it)` : ''}, and onnxruntime-node's WebGPU provider opens only the first adapter; install it, or load it with VK_LAYER_PATH and VK_INSTANCE_LAYERS=VK_LAYER_MESA_device_select`);
  }
  const t = b.target;
  const dev = devs.find((d) => ('pci' in t ? d.pci === t.pci : sameIds(d.vendorDevice, t.vendorDevice)));
  if (!dev) {
    throw new InputError(`${who}: ${targetText(t)} (${b.source}) is not a Vulkan device of this host (Vulkan devices: ${describeDevices(devs)}; ${describeGpus(gpus)})`);
  }
  for (const [k, v] of Object.entries(b.env)) env[k] = v;
  const adapter = `${dev.name} (${dev.vendorDevice} ${dev.type}${dev.pci ? ` @${dev.pci}` : ''})`;
  return { adapter, reason: `${b.source} → ${adapter}` };
}

function sameIds(a: string, b: string): boolean {
  const [a1, a2] = a.split(':').map((x) => parseInt(x, 16));
  const [b1, b2] = b.split(':').map((x) => parseInt(x, 16));
  return a1 === b1 && a2 === b2;
}

let probed: Promise<string | null> | undefined;
let processBinding: ReturnType<typeof bindGpu> | undefined;

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

/** Picks the device and, for the GPU, binds this rank to its adapter (see the file comment). */
export async function chooseDevice(request: DeviceRequest, env: NodeJS.ProcessEnv = process.env): Promise<DeviceChoice> {
  if (request === 'cpu') return { device: 'cpu', reason: 'requested', executionProviders: ['cpu'] };
  // The binding comes first: the probe below creates Dawn's instance, after which the layer's
  // environment is read no more. A wrong binding is an error under 'auto' too: it was asked for.
  let bound: Awaited<ReturnType<typeof bindGpu>>;
  try {
    bound = await (env === process.env ? (processBinding ??= bindGpu(env)) : bindGpu(env));
  } catch (e) {
    // 'auto' on a host with no adapter at all runs on the CPU whatever the binding says.
    if (request === 'auto') {
      const none = await probeWebGpu();
      if (none) return { device: 'cpu', reason: `auto: no WebGPU adapter (${none})`, executionProviders: ['cpu'] };
    }
    throw e;
  }
  const missing = await probeWebGpu();
  if (missing) {
    if (request === 'auto') return { device: 'cpu', reason: `auto: no WebGPU adapter (${missing})`, executionProviders: ['cpu'] };
    throw new InputError(`${rankName(env)}: --device gpu but no WebGPU adapter is usable: ${missing}`);
  }
  return { device: 'gpu', ...(bound.adapter ? { adapter: bound.adapter } : {}), reason: bound.reason, executionProviders: ['webgpu'] };
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

/**
 * Which adapter a probe on this rank would open: the host plus the rank's binding (or the host's
 * default adapter). Ranks with the same key would probe the same device.
 */
export function adapterKey(env: NodeJS.ProcessEnv = process.env, host = hostname()): string {
  let b: GpuBinding | undefined;
  try {
    b = gpuBinding(env);
  } catch (e) {
    // A binding naming no device: this rank must probe (and report) for itself.
    return `${host}|unbindable|${(e as Error).message}`;
  }
  return `${host}|${b ? targetText(b.target) : 'default adapter'}`;
}

/** The first rank of each distinct adapter key: the ranks that probe. */
export function probingRanks(keys: readonly string[]): number[] {
  const seen = new Set<string>();
  const out: number[] = [];
  keys.forEach((k, r) => {
    if (!seen.has(k)) { seen.add(k); out.push(r); }
  });
  return out;
}

const DEVICE_TAG = 0x44560;

/**
 * `--device auto` for a whole world, deciding one device for every rank (an engine's ranks must all be
 * built for the same provider). Ranks that would open the same adapter (same host, same binding) share
 * one probe, made by the lowest of them: a probe creates a Dawn instance and a session, seconds and GPU
 * memory per process, for an answer their siblings would repeat. Ranks bound to different adapters
 * (another GPU of the host, another host) each probe their own, since one adapter working says nothing
 * of another. The world builds for the GPU only where every probed adapter opened.
 */
export async function agreeDevice(world: World): Promise<{ device: Device; reason: string }> {
  const key = adapterKey();
  let keys: string[] | undefined;
  if (world.rank === 0) {
    keys = [key];
    for (let r = 1; r < world.size; r++) keys.push(await world.recvObject<string>(r, DEVICE_TAG));
  } else {
    await world.sendObject(key, 0, DEVICE_TAG);
  }
  const probers = await world.broadcastObject(keys && probingRanks(keys), 0);
  let ok = 1;
  let reason = '';
  if (probers.includes(world.rank)) {
    const c = await traceSpan('device.probe', () => chooseDevice('auto'), { key });
    ok = c.device === 'gpu' ? 1 : 0;
    reason = c.reason;
  }
  const all = await world.allReduce(Int32Array.of(ok), 'min');
  return all[0] === 1
    ? { device: 'gpu', reason: `auto: ${probers.length} adapter(s) probed, all usable` }
    : { device: 'cpu', reason: `auto: ${ok ? 'an adapter of another rank' : reason} is not usable` };
}

/**
 * TPRUN_WEBGPU_EP_OPTIONS: the WebGPU provider's options as a JSON object (the few onnxruntime-node passes
 * on: validationMode, *BufferCacheMode, preferredLayout), for measuring them (scripts/gpu/run.sh); read by
 * EngineRunner.load on every device, and by the engine commands before their ranks start, so that a value
 * spelt wrong is refused once, in one line (../util/env.ts), wherever the run would have landed.
 */
export function webgpuEpOptions(env: NodeJS.ProcessEnv = process.env): Record<string, unknown> | undefined {
  const o = jsonObject('TPRUN_WEBGPU_EP_OPTIONS', env);
  // The provider is chosen by --device, not here: {"name":"cpu"} once replaced the provider's name.
  if (o && 'name' in o) throw new InputError(`TPRUN_WEBGPU_EP_OPTIONS=${env.TPRUN_WEBGPU_EP_OPTIONS}: has a "name" key; these are the WebGPU provider's options (the device is chosen by --device)`);
  return o;
}
