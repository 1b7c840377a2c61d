// GPU binding: which CUDA device each local rank sees (CUDA_VISIBLE_DEVICES).
import { execa } from 'execa';

export class GpuSpecError extends Error {
  readonly exitCode = 2;
}

/** Parses `--gpus`: 'auto', 'none' or a comma-separated list of device ids (indices or UUIDs). */
export function parseGpus(spec: string): 'auto' | 'none' | string[] {
  const s = spec.trim();
  if (s === 'auto' || s === 'none') return s;
  const ids = s.split(',').map((x) => x.trim());
  if (ids.some((x) => !/^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$/.test(x))) {
    throw new GpuSpecError(`--gpus must be auto, none or a list like 0,1,2 (got '${spec}')`);
  }
  return ids;
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
  const r = await execa('nvidia-smi', ['-L'], { reject: false, timeout: 10_000, stdin: 'ignore' });
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
