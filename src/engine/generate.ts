// The generation loop: one batched prefill (prompts right-padded, each row's length in seqlens_k), then
// decode steps that feed only each row's newest token against the in-place KV cache.

import { traceSpan } from '../util/trace.js';
import { InputError } from '../checkpoint/errors.js';
import type { EngineRunner } from './runtime.js';
import { sampleToken, seededRandom, type SamplingOptions } from './sampling.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Stop a row at one of these ids (the id is kept in its output). Empty: never stop early. */
  eosIds?: number[];
  /** Called after every step with the number of new tokens so far (for progress bars). */
  onStep?: (step: number) => void;
}

export interface GenerateResult {
  promptIds: number[][];
  newIds: number[][];
  /** Logits at each prompt's last position, [vocab] per prompt. */
  lastPromptLogits: Float32Array[];
  timings: { prefill_ms: number; decode_ms_per_token: number; tokens_per_s: number; decode_steps: number };
}

export async function generate(runner: EngineRunner, prompts: number[][], opts: GenerateOptions): Promise<GenerateResult> {
  const bc = runner.config.build_config;
  const V = runner.vocabSize;
  const B = prompts.length;
  if (B === 0) throw new InputError('no prompt given');
  if (B > bc.max_batch_size) throw new InputError(`${B} prompts exceed the engine's max_batch_size ${bc.max_batch_size}`);
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new InputError(`prompt ${i} is empty`);
    if (p.length > bc.max_input_len) throw new InputError(`prompt ${i} has ${p.length} tokens, more than the engine's max_input_len ${bc.max_input_len}`);
    for (const id of p) if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`prompt ${i}: token id ${id} is outside the vocabulary [0, ${V})`);
  });
  const S = Math.max(...prompts.map((p) => p.length));
  const maxNew = Math.max(0, Math.min(opts.maxNewTokens, bc.max_seq_len - S));
  const capacity = S + Math.max(maxNew, 1);
  const cache = runner.newCache(B, capacity);
  const lens = prompts.map((p) => p.length);

  const ids = new Array<number>(B * S).fill(0);
  prompts.forEach((p, b) => p.forEach((t, i) => { ids[b * S + i] = t; }));
  const t0 = performance.now();
  const logits = await traceSpan('prefill', () => runner.forward({
    batch: B, seq: S, ids,
    seqlensK: Int32Array.from(lens, (l) => l - 1),
    totalSeq: S,
    positions: lens.map((l) => l - 1),
    npos: 1,
  }, cache), { batch: B, tokens: lens.reduce((a, b) => a + b, 0) });
  const prefillMs = performance.now() - t0;
  const lastPromptLogits = prompts.map((_, b) => logits.slice(b * V, (b + 1) * V));

  const rands = prompts.map(() => seededRandom(opts.seed ?? 0));
  const eos = new Set(opts.eosIds ?? []);
  const newIds: number[][] = prompts.map(() => []);
  const done = prompts.map(() => maxNew === 0);
  let row = logits;
  let steps = 0;
  const t1 = performance.now();
  for (let step = 0; step < maxNew; step++) {
    const next = prompts.map((_, b) => {
      if (done[b]) return 0;
      const tok = sampleToken(row.subarray(b * V, (b + 1) * V), opts, rands[b]);
      newIds[b].push(tok);
      if (eos.has(tok) || newIds[b].length >= maxNew) done[b] = true;
      return tok;
    });
    opts.onStep?.(step + 1);
    if (done.every(Boolean)) break;
    // Row b's newest token sits at index lens[b] + step of its cache.
    row = await traceSpan('decode', () => runner.forward({
      batch: B, seq: 1, ids: next,
      seqlensK: Int32Array.from(lens, (l) => l + step),
      totalSeq: Math.max(...lens) + step + 1,
      positions: new Array(B).fill(0),
      npos: 1,
    }, cache));
    steps++;
  }
  const decodeMs = performance.now() - t1;
  cache.dispose();
  const produced = newIds.reduce((s, r) => s + r.length, 0);
  return {
    promptIds: prompts,
    newIds,
    lastPromptLogits,
    timings: {
      prefill_ms: prefillMs,
      decode_ms_per_token: steps ? decodeMs / steps : 0,
      tokens_per_s: decodeMs > 0 ? (produced - B) / (decodeMs / 1000) : 0,
      decode_steps: steps,
    },
  };
}
