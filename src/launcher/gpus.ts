// GPU binding: which device each local rank gets. CUDA-style ids (index, UUID, MIG) go to
// CUDA_VISIBLE_DEVICES; every id goes to TPRUN_GPU, and on the rank's own host it also becomes the
// environment of Mesa's device-select Vulkan layer, the only handle on which adapter
// onnxruntime-node's WebGPU provider opens (it takes the first one the Vulkan loader lists).
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export class GpuSpecError extends Error {
  readonly exitCode = 2;
}

const CUDA_ID = /^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$/;
// nvidia-smi's pci.bus_id (00000000:41:00.0), lspci's (0000:41:00.0 or 41:00.0)
const PCI_ID = /^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/;
// a Vulkan vendorID:deviceID in hex, as Mesa's MESA_VK_DEVICE_SELECT takes it (lavapipe is 10005:0)
const VENDOR_ID = /^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,8})$/;

/** Parses `--gpus`: 'auto', 'none' or a comma-separated list of device ids (indices, UUIDs, PCI bus ids, Vulkan vendor:device). */
export function parseGpus(spec: string): 'auto' | 'none' | string[] {
  const s = spec.trim();
  if (s === 'auto' || s === 'none') return s;
  const ids = s.split(',').map((x) => x.trim());
  if (ids.some((x) => !CUDA_ID.test(x) && !PCI_ID.test(x) && !VENDOR_ID.test(x))) {
    throw new GpuSpecError(`--gpus must be auto, none or a list of GPU indices, UUIDs, PCI bus ids (0000:41:00.0) or Vulkan vendor:device ids (10005:0) (got '${spec}')`);
  }
  return ids;
}

export interface HostGpu { index: number; name: string; uuid?: string; bus?: string }

const NVIDIA_PROC = '/proc/driver/nvidia/gpus';

/** The host's NVIDIA GPUs in PCI bus order (nvidia-smi's order), from the driver's /proc entries. */
export function hostGpus(procDir = NVIDIA_PROC): HostGpu[] {
  if (!existsSync(procDir)) return [];
  const found: Omit<HostGpu, 'index'>[] = [];
  for (const bus of readdirSync(procDir).sort()) {
    let info = '';
    try { info = readFileSync(join(procDir, bus, 'information'), 'utf8'); } catch { continue; }
    const field = (k: string) => info.match(new RegExp(`^${k}:\\s*(.+)$`, 'm'))?.[1].trim();
    found.push({ name: field('Model') ?? 'NVIDIA GPU', uuid: field('GPU UUID'), bus: normalPci(field('Bus Location') ?? bus) ?? bus });
  }
  return found.map((g, index) => ({ index, ...g }));
}

/** A PCI bus id as DDDD:BB:DD.F (lower case, 4-digit domain), or undefined where `id` is none. */
export function normalPci(id: string): string | undefined {
  const m = PCI_ID.exec(id.trim());
  if (!m) return undefined;
  const domain = (m[1] ?? '0').replace(/^0+(?=[0-9a-fA-F]{4})/, '').padStart(4, '0');
  return `${domain}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase();
}

/** What Mesa's device-select layer is asked to show: a PCI device, or a Vulkan vendor:device (a device without a bus, such as lavapipe). */
export type VulkanTarget = { pci: string; name: string } | { vendorDevice: string; name: string };

/**
 * The Vulkan device a GPU id names on this host: indices and UUIDs through the NVIDIA driver's list,
 * PCI bus ids and vendor:device ids as they are. Throws (a GpuSpecError naming `what`) where the id
 * names no device of this host.
 */
export function vulkanTarget(id: string, gpus: HostGpu[], what: string): VulkanTarget {
  const pci = normalPci(id);
  if (pci) return { pci, name: gpus.find((g) => g.bus === pci)?.name ?? `PCI ${pci}` };
  const vd = VENDOR_ID.exec(id);
  if (vd) return { vendorDevice: `${vd[1].toLowerCase()}:${vd[2].toLowerCase()}`, name: `Vulkan device ${id}` };
  const g = /^\d+$/.test(id) ? gpus[Number(id)] : gpus.find((x) => x.uuid === id);
  if (!g) throw new GpuSpecError(`${what}: no GPU ${/^\d+$/.test(id) ? id : `with UUID ${id}`} on this host (${describeGpus(gpus)})`);
  if (!g.bus) throw new GpuSpecError(`${what}: GPU ${id} (${g.name}) has no PCI bus id in ${NVIDIA_PROC}, so it cannot be bound`);
  return { pci: g.bus, name: g.name };
}

export function describeGpus(gpus: HostGpu[]): string {
  if (!gpus.length) return `no NVIDIA GPU listed in ${NVIDIA_PROC}`;
  return `${gpus.length} GPU(s): ${gpus.map((g) => `${g.index} ${g.name}${g.bus ? ` @${g.bus}` : ''}`).join(', ')}`;
}

/**
 * The environment that makes Mesa's device-select layer (src/vulkan/device-select-layer in Mesa) show
 * a process this one device alone: DRI_PRIME=pci-DDDD_BB_DD_F picks by bus (only devices with
 * VK_EXT_pci_bus_info have one), MESA_VK_DEVICE_SELECT=vid:did by ids, and
 * MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 hides every other device. The layer itself is implicit
 * where mesa-vulkan-drivers installs it; elsewhere VK_LAYER_PATH + VK_INSTANCE_LAYERS load it.
 */
export function deviceSelectEnv(t: VulkanTarget): Record<string, string> {
  // The other selector is emptied, not left to inheritance: the layer reads MESA_VK_DEVICE_SELECT
  // before DRI_PRIME, and an empty value selects nothing.
  if ('pci' in t) return { DRI_PRIME: `pci-${t.pci.replace(/[:.]/g, '_')}`, MESA_VK_DEVICE_SELECT: '', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' };
  return { MESA_VK_DEVICE_SELECT: t.vendorDevice, DRI_PRIME: '', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' };
}

/** Whether a GPU id is one CUDA understands (CUDA_VISIBLE_DEVICES takes indices, UUIDs, MIG ids only). */
export function isCudaId(id: string): boolean {
  return CUDA_ID.test(id);
}

/**
 * The devices of this machine for `auto`: an already-set CUDA_VISIBLE_DEVICES is respected (Slurm and
 * schedulers set it to the job's share), otherwise one per line of `nvidia-smi -L`; none without it.
 */
export async function detectGpus(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const preset = env.CUDA_VISIBLE_DEVICES;
  if (preset !== undefined && preset.trim() !== '') {
    return preset.split(',').map((x) => x.trim()).filter((x) => x !== '' && x !== '-1');
  }
  // node's execFile, not execa: execa is ~130 modules (~100 ms of CPU on a small machine), paid by every
  // `tprun convert/build --tp N` whose launcher asks nvidia-smi (launch time is measured: `tprun bench launch`).
  const r = await new Promise<{ failed: boolean; stdout: string }>((res) => {
    execFile('nvidia-smi', ['-L'], { timeout: 10_000, encoding: 'utf8' }, (err, stdout) => res({ failed: !!err, stdout }));
  });
  if (r.failed || typeof r.stdout !== 'string') return [];
  return r.stdout.split('\n').filter((l) => /^GPU \d+:/.test(l)).map((_, i) => String(i));
}

/**
 * Device per local rank. An explicit list must cover every rank of the node; `auto` shares devices
 * round-robin when there are more ranks than GPUs (each rank still sees exactly one).
 */
export function assignGpus(spec: 'auto' | 'none' | string[], found: string[], localSize: number): (string | undefined)[] {
  if (spec === 'none') return new Array(localSize).fill(undefined);
  const list = spec === 'auto' ? found : spec;
  if (list.length === 0) return new Array(localSize).fill(undefined);
  if (spec !== 'auto' && list.length < localSize) {
    throw new GpuSpecError(`--gpus lists ${list.length} device(s) but ${localSize} ranks run on one node`);
  }
  return Array.from({ length: localSize }, (_, i) => list[i % list.length]);
}
