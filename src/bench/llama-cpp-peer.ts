// llama.cpp as the peer of `tprun bench generate --peer llama.cpp`: node-llama-cpp's prebuilt binaries
// (Vulkan on a GPU, the CPU build otherwise) on a GGUF of the same weights (./gguf.ts), batch 1,
// greedy, the same prompt ids as tprun. node-llama-cpp is not a dependency of tprun (its binaries are
// hundreds of MB): it lives in bench/peers/ (`cd bench/peers && npm ci --ignore-scripts`), loaded from
// there or from TPRUN_PEERS_DIR.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { InputError } from '../core/errors.js';

const PEERS = process.env.TPRUN_PEERS_DIR ?? fileURLToPath(new URL('../../bench/peers', import.meta.url));

// The few node-llama-cpp 3.x calls used here (its own types live in bench/peers, outside this build).
interface Sequence {
  clearHistory(): Promise<void>;
  evaluate(tokens: number[], opts?: { temperature?: number; yieldEogToken?: boolean }): AsyncGenerator<number, void, void>;
}
interface Llama {
  gpu: string | false;
  getGpuDeviceNames(): Promise<string[]>;
  loadModel(o: { modelPath: string; gpuLayers?: number | 'max' }): Promise<{
    createContext(o: { contextSize: number; batchSize: number; sequences: number; threads?: number }): Promise<{ getSequence(): Sequence; dispose(): Promise<void> }>;
    dispose(): Promise<void>;
  }>;
  dispose(): Promise<void>;
}

/** Throws the one-line input error when node-llama-cpp is missing (checked before anything is measured). */
export function requireLlamaCpp(): string {
  const dir = join(PEERS, 'node_modules', 'node-llama-cpp');
  if (!existsSync(join(dir, 'package.json'))) throw new InputError(`--peer llama.cpp: node-llama-cpp is not installed in ${PEERS} (cd bench/peers && npm ci --ignore-scripts)`);
  return dir;
}

async function loadLlama(gpu: 'vulkan' | false): Promise<Llama> {
  const dir = requireLlamaCpp();
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { exports: { '.': { import: string } } };
  const mod = (await import(pathToFileURL(join(dir, pkg.exports['.'].import)).href)) as { getLlama(o: object): Promise<Llama> };
  // build 'never': only the prebuilt binaries, nothing compiled or downloaded.
  return mod.getLlama({ build: 'never', gpu, logLevel: 'error', progressLogs: false, skipDownload: true });
}

export interface PeerResult {
  bench: 'generate-peer';
  tool: string;
  gguf: string;
  device: string;
  prompt_tokens: number;
  new_tokens: number;
  prefill_ms: number;
  prefill_tokens_per_s: number;
  decode_ms_per_token: number;
  decode_tokens_per_s: number;
  greedy_ids: number[];
}

/**
 * Prefill = time to the first new token (the prompt's forward and one greedy pick); decode = the time of
 * the remaining new tokens, per token. Medians over `reps` after one warm-up.
 */
export async function benchLlamaCpp(o: { gguf: string; gpu: boolean; prompt: number[]; newTokens: number; reps: number; threads?: number }): Promise<PeerResult> {
  const llama = await loadLlama(o.gpu ? 'vulkan' : false);
  if (o.gpu && llama.gpu !== 'vulkan') throw new Error(`llama.cpp: no Vulkan device (gpu = ${llama.gpu})`);
  const model = await llama.loadModel({ modelPath: o.gguf, gpuLayers: o.gpu ? 'max' : 0 });
  const N = Math.max(2, o.newTokens);
  const ctx = await model.createContext({ contextSize: o.prompt.length + N + 16, batchSize: o.prompt.length, sequences: 1, ...(o.threads ? { threads: o.threads } : {}) });
  const seq = ctx.getSequence();
  const once = async () => {
    await seq.clearHistory();
    const ids: number[] = [];
    const t0 = performance.now();
    // Greedy, and on past end-of-text as tprun's bench does (it never stops early).
    const it = seq.evaluate(o.prompt, { temperature: 0, yieldEogToken: true });
    let r = await it.next();
    const t1 = performance.now();
    while (!r.done) {
      ids.push(r.value as number);
      if (ids.length >= N) break;
      r = await it.next();
    }
    const t2 = performance.now();
    await it.return(undefined);
    return { prefill: t1 - t0, decode: (t2 - t1) / (ids.length - 1), ids };
  };
  await once();
  const runs = [];
  for (let i = 0; i < o.reps; i++) runs.push(await once());
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const p = med(runs.map((r) => r.prefill));
  const d = med(runs.map((r) => r.decode));
  const device = o.gpu ? `vulkan: ${(await llama.getGpuDeviceNames()).join(', ')}` : 'cpu';
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const version = (JSON.parse(readFileSync(join(PEERS, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')) as { version: string }).version;
  return {
    bench: 'generate-peer', tool: `llama.cpp (node-llama-cpp ${version} prebuilt)`, gguf: o.gguf, device,
    prompt_tokens: o.prompt.length, new_tokens: runs[0].ids.length,
    prefill_ms: r3(p), prefill_tokens_per_s: r3(o.prompt.length / (p / 1000)),
    decode_ms_per_token: r3(d), decode_tokens_per_s: r3(1000 / d),
    greedy_ids: runs[0].ids,
  };
}
