// Calibration: run the unquantized model (float32, tp=1, on rank 0) through onnxruntime over the
// calibration text, with H4's engine built with `calibration: true` so that every linear's input
// activation comes out, and reduce them to the statistics the algorithms need.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { build, type ModelShard } from '../engine/engine.js';
import { EngineRunner } from '../engine/runtime.js';
import type { TextTokenizer } from '../engine/tokenizer.js';
import type { PretrainedConfig } from '../core/config.js';
import type { World } from '../rank/types.js';
import { LocalWorld } from '../rank/local-world.js';
import { progress } from '../util/progress.js';
import { LAYER_LINEARS } from './algorithms.js';
import { LinearInputStats, type CalibrationStats } from './calib-stats.js';
import { ortMatmulNT } from './ort-kernels.js';
import { toFloat32 } from './tensor-f32.js';

export interface CalibrationOptions {
  file: string;
  samples: number;
  /** Tokens per forward window (calibration windows never cross into each other). */
  window?: number;
  batch?: number;
  kvCache?: boolean;
  /** Rows kept per linear for error-driven searches (AWQ). */
  sampleRows?: number;
}

/** Calibration tokens: the first `samples` non-empty lines, each [BOS] + ids + [EOS], concatenated. */
export async function calibrationTokens(tok: TextTokenizer, file: string, samples: number, bos: number, eos: number): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new InputError(`--calib ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const out: number[] = [];
  let used = 0;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    if (used++ >= samples) break;
    out.push(bos, ...tok.encode(line, { special: false }), eos);
  }
  if (out.length < 2) throw new InputError(`--calib ${file}: no text to calibrate on`);
  return out;
}

// The calibration engine is a tp=1 model inside rank 0, not the job's world: it needs a world of one.
function worldOfOne(): World {
  return new LocalWorld({ rank: 0, size: 1, localRank: 0, localSize: 1, nodeRank: 0, source: 'single' });
}

/**
 * K after rotary is a rotation of each (i, i + d/2) pair of the linear's output, so the pair's norm
 * bounds every rotated value whatever the position: a range that holds for all positions.
 */
function kvAbsmaxOf(kvOut: Float32Array, t: number, cfg: PretrainedConfig): number {
  const hs = cfg.head_size, kv = cfg.num_key_value_heads;
  const width = 2 * kv * hs;
  let m = 0;
  for (let i = 0; i < t; i++) {
    const row = i * width;
    for (let h = 0; h < kv; h++) {
      const kb = row + h * hs, vb = row + (kv + h) * hs;
      for (let j = 0; j < hs / 2; j++) {
        m = Math.max(m, Math.hypot(kvOut[kb + j], kvOut[kb + j + hs / 2]));
      }
      for (let j = 0; j < hs; j++) m = Math.max(m, Math.abs(kvOut[vb + j]));
    }
  }
  return m;
}

export async function calibrate(model: ModelShard, tok: TextTokenizer, o: CalibrationOptions): Promise<CalibrationStats> {
  const cfg = model.config;
  if (cfg.mapping.tp_size !== 1) throw new Error('calibration runs on the full model (tp=1)');
  const window = o.window ?? 256;
  const batch = o.batch ?? 8;
  const bos = typeof cfg.bos_token_id === 'number' ? cfg.bos_token_id : 0;
  const eos = typeof cfg.eos_token_id === 'number' ? cfg.eos_token_id : Array.isArray(cfg.eos_token_id) ? cfg.eos_token_id[0] : 1;
  const tokens = await calibrationTokens(tok, o.file, o.samples, bos, eos);

  const engine = await build(model, { calibration: true, dtype: 'float32', max_batch_size: batch, max_input_len: window, max_seq_len: window });
  const dir = await mkdtemp(join(tmpdir(), 'tprun-calib-'));
  const stats: CalibrationStats = { linears: new Map(), kvAbsmax: new Map(), tokens: 0 };
  const qkvWeights = new Map<number, Float32Array>();
  if (o.kvCache) {
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const name = `transformer.layers.${l}.attention.qkv.weight`;
      const t = model.weights.get(name);
      if (!t) throw new Error(`missing tensor ${name}`);
      // Only the K and V rows: [q; k; v] order, q first.
      qkvWeights.set(l, toFloat32(t, name).subarray(cfg.num_attention_heads * cfg.head_size * cfg.hidden_size));
    }
  }
  try {
    await engine.save(join(dir, 'engine'));
    const runner = await EngineRunner.load(engine, worldOfOne());
    try {
      // Windows of `window` tokens (the last one shorter), `batch` of them per forward pass.
      const windows: number[][] = [];
      for (let i = 0; i < tokens.length; i += window) windows.push(tokens.slice(i, i + window));
      const bar = progress('calibrate', tokens.length, 'tokens');
      // Spread the AWQ sample over the whole text rather than its beginning.
      const stride = Math.max(1, Math.floor(tokens.length / (o.sampleRows ?? 256)));
      for (let w0 = 0; w0 < windows.length; w0 += batch) {
        const group = windows.slice(w0, w0 + batch);
        const seq = Math.max(...group.map((w) => w.length));
        // Equal lengths within one call (only the final window is short and it rides alone).
        const calls = group.every((w) => w.length === seq) ? [group] : group.map((w) => [w]);
        for (const call of calls) {
          const s = call[0].length;
          const acts = await runner.calibrationActivations({
            batch: call.length, seq: s, ids: call.flat(),
            seqlensK: new Int32Array(call.length).fill(s - 1), totalSeq: s,
            positions: new Array(call.length).fill(s - 1), npos: 1,
          });
          const t = call.length * s;
          for (const [prefix, a] of acts) {
            if (!prefix.startsWith('transformer.layers.')) continue; // lm_head stays float
            const k = a.dims[a.dims.length - 1];
            let st = stats.linears.get(prefix);
            if (!st) stats.linears.set(prefix, (st = new LinearInputStats(k, o.sampleRows ?? 256)));
            st.add(a.data, stride);
          }
          for (const [l, w] of qkvWeights) {
            const x = acts.get(`transformer.layers.${l}.attention.qkv`);
            if (!x) throw new Error(`calibration engine gave no input for layer ${l}'s qkv`);
            const n = w.length / cfg.hidden_size;
            const m = kvAbsmaxOf(await ortMatmulNT(x.data, t, w, n, cfg.hidden_size), t, cfg);
            stats.kvAbsmax.set(l, Math.max(stats.kvAbsmax.get(l) ?? 0, m));
          }
          stats.tokens += t;
          bar.tick(t);
        }
      }
      bar.done();
    } finally {
      await runner.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    for (const lin of LAYER_LINEARS) {
      if (!stats.linears.has(`transformer.layers.${l}.${lin}`)) throw new Error(`calibration engine gave no input for transformer.layers.${l}.${lin}`);
    }
  }
  return stats;
}

