// `bench generate --peer llama.cpp`: llama.cpp on the same weights, precision, device, prompt ids and
// token counts as the tprun engine just measured. The GGUF is written from --model (F16 for a float
// engine, Q4_0 for an int4 weight-only one, Q8_0 for int8) unless --gguf names one.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../engine/engine.js';
import { writeGguf } from './gguf.js';
import { benchLlamaCpp, type PeerResult } from './llama-cpp-peer.js';

export interface PeerArgs { model: string; gguf?: string; device?: string; 'new-tokens': number; reps: number; threads?: number }

export async function runPeer(a: PeerArgs, engineDir: string, prompt: number[], tprun: Record<string, unknown>): Promise<PeerResult & Record<string, unknown>> {
  const config = await Engine.readConfig(engineDir);
  const algo = config.pretrained_config.quantization?.quant_algo ?? null;
  const type = algo === null ? 'f16' : algo.startsWith('W4A16') ? 'q4_0' : algo === 'W8A16' ? 'q8_0' : null;
  if (!type) throw Object.assign(new Error(`--peer llama.cpp: no GGUF counterpart for quant_algo ${algo}`), { exitCode: 2 });
  let tmp: string | undefined;
  try {
    let gguf = a.gguf;
    let written: Record<string, unknown> = {};
    if (!gguf) {
      tmp = mkdtempSync(join(tmpdir(), 'tprun-gguf-'));
      gguf = join(tmp, `model-${type}.gguf`);
      const t0 = performance.now();
      written = { ...writeGguf(a.model, gguf, type), gguf_write_s: Math.round(performance.now() - t0) / 1000 };
    }
    const gpu = (tprun.device ?? a.device) === 'gpu';
    const r = await benchLlamaCpp({ gguf, gpu, prompt: prompt.slice(0, Number(tprun.prompt_tokens ?? prompt.length)), newTokens: Number(tprun.new_tokens ?? a['new-tokens']), reps: a.reps, threads: a.threads });
    const ratio = (x: unknown, y: number) => (typeof x === 'number' ? Math.round((x / y) * 1000) / 1000 : null);
    return {
      ...r, ...written, weight_type: type,
      tprun_engine: engineDir,
      tprun_prefill_ratio: ratio(tprun.prefill_tokens_per_s, r.prefill_tokens_per_s),
      tprun_decode_ratio: ratio(tprun.decode_tokens_per_s, r.decode_tokens_per_s),
    };
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}
