// The generation loop: one batched prefill (prompts right-padded, each row's length in seqlens_k), then
// decode steps that feed only each row's newest token against the in-place KV cache.
//
// One loop for every pipeline depth; pp = 1 is the pipeline of one stage, which is first and last at once
// (it samples its own logits and feeds the tokens straight back, with no message). With pp > 1 the
// prompts are cut into micro-batches, each with its own KV cache on every stage. The first stage embeds and runs its layers, sends the hidden states to the next stage
// (world send/recv, from each tp rank to the same tp rank of the next stage, TensorRT-LLM's
// next_pp_rank), and so on; the last stage samples and sends the tokens back to the first (its
// next_pp_rank wraps around). While one micro-batch is in a later stage the first stage already runs the
// next one, so with as many micro-batches in flight as stages every stage is busy.

import { traceCounter, traceSpan } from '../util/trace.js';
import { InputError } from '../core/errors.js';
import type { EngineRunner, ForwardRequest, KvCache } from './runtime.js';
import type { BuildConfig } from './build-config.js';
import { TAG_PIPE } from './stage-comm.js';
import { sampleToken, seededRandom, type SamplingOptions } from './sampling.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Stop a row at one of these ids (the id is kept in its output). Empty: never stop early. */
  eosIds?: number[];
  /** Called after every step with the number of new tokens so far (for progress bars). */
  onStep?: (step: number) => void;
  /** pp > 1: micro-batches in flight together (default: min(prompts, pp)). */
  microBatches?: number;
}

/**
 * How many new tokens fit: the engine's max_seq_len less the longest prompt. A prompt that leaves no room
 * while tokens are asked for is an input error naming both lengths; a request beyond the room is capped.
 */
export function newTokenBudget(bc: Pick<BuildConfig, 'max_seq_len'>, prompts: number[][], maxNewTokens: number): { maxNew: number; capped: boolean; room: number } {
  const S = Math.max(0, ...prompts.map((p) => p.length));
  const room = Math.max(0, bc.max_seq_len - S);
  if (maxNewTokens > 0 && room === 0) {
    const i = prompts.findIndex((p) => p.length === S);
    throw new InputError(`prompt ${i} has ${S} tokens, which fills the engine's max_seq_len ${bc.max_seq_len}: no room for a new token (rebuild with a larger --max-seq-len)`);
  }
  return { maxNew: Math.min(maxNewTokens, room), capped: maxNewTokens > room, room };
}

export interface GenerateResult {
  promptIds: number[][];
  newIds: number[][];
  /** Logits at each prompt's last position, [vocab] per prompt. */
  lastPromptLogits: Float32Array[];
  timings: {
    prefill_ms: number; decode_ms_per_token: number; tokens_per_s: number; decode_steps: number; total_ms?: number; micro_batches?: number;
    /** On this rank: from the call to the first token sampled (pp: to its first prefill pass done, the first stage: to the first token back). */
    ttft_ms: number;
    /** On this rank, one per decode step: the time from one token to the next (pp: per micro-batch, between its passes on this stage). */
    step_ms: number[];
  };
}

/** The prompts an engine can take (batch size, lengths, token ids), refused in one line otherwise; the ONNX and WGSL loops share it. */
export function checkPrompts(bc: BuildConfig, V: number, prompts: number[][]): void {
  const B = prompts.length;
  if (B === 0) throw new InputError('no prompt given');
  if (B > bc.max_batch_size) throw new InputError(`${B} prompts exceed the engine's max_batch_size ${bc.max_batch_size}`);
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new InputError(`prompt ${i} is empty`);
    if (p.length > bc.max_input_len) throw new InputError(`prompt ${i} has ${p.length} tokens, more than the engine's max_input_len ${bc.max_input_len}`);
    for (const id of p) if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`prompt ${i}: token id ${id} is outside the vocabulary [0, ${V})`);
  });
}

export async function generate(runner: EngineRunner, prompts: number[][], opts: GenerateOptions): Promise<GenerateResult> {
  const bc = runner.config.build_config;
  checkPrompts(bc, runner.vocabSize, prompts);
  const { maxNew } = newTokenBudget(bc, prompts, opts.maxNewTokens);
  return runPipeline<KvCache>(runner, prompts, opts, maxNew);
}

/** What the pipeline loop needs of a runner: the ONNX one (runtime.ts) or the WGSL one (wgsl/runner.ts), each with its own caches. */
export interface PipelineRunner<C extends { dispose(): void }> extends Pick<EngineRunner, 'config' | 'vocabSize' | 'mapping' | 'world'> {
  newCache(batch: number, capacity: number): C;
  forwardStage(req: ForwardRequest, cache: C, hiddenIn?: Float32Array): Promise<{ logits?: Float32Array; hidden?: Float32Array }>;
  /**
   * Optional, for greedy decode passes on the last stage: each row's argmax token (ties to the lowest id,
   * as sampleToken) taken where the logits are, so that they need not cross to the host.
   */
  greedyStage?(req: ForwardRequest, cache: C, hiddenIn?: Float32Array): Promise<Int32Array>;
}

interface MicroBatch<C = KvCache> {
  /** Index of its first prompt in the whole batch. */
  first: number;
  prompts: number[][];
  lens: number[];
  S: number;
  cache: C;
}

/** Pass 0 is the prefill; pass j ≥ 1 feeds each row's j-th new token. */
function passRequest(mb: MicroBatch<unknown>, pass: number, ids?: ArrayLike<number>): ForwardRequest {
  const B = mb.prompts.length;
  if (pass === 0) {
    const flat = new Array<number>(B * mb.S).fill(0);
    mb.prompts.forEach((p, b) => p.forEach((t, i) => { flat[b * mb.S + i] = t; }));
    return { batch: B, seq: mb.S, ids: flat, seqlensK: Int32Array.from(mb.lens, (l) => l - 1), totalSeq: mb.S, positions: mb.lens.map((l) => l - 1), npos: 1 };
  }
  // Row b's newest token sits at index lens[b] + pass - 1 of its cache.
  return {
    batch: B, seq: 1, ids: ids ?? new Array(B).fill(0),
    seqlensK: Int32Array.from(mb.lens, (l) => l + pass - 1),
    totalSeq: mb.S + pass,
    positions: new Array(B).fill(0),
    npos: 1,
  };
}

/** Contiguous micro-batches of sizes as even as possible. */
function splitMicroBatches(prompts: number[][], m: number): { first: number; prompts: number[][] }[] {
  const out: { first: number; prompts: number[][] }[] = [];
  let at = 0;
  for (let k = 0; k < m; k++) {
    const n = Math.floor(prompts.length / m) + (k < prompts.length % m ? 1 : 0);
    out.push({ first: at, prompts: prompts.slice(at, at + n) });
    at += n;
  }
  return out;
}

/** The last stage's sampling: every row's next token (-1 once done) then its done flag, as [2 * rows]. */
function sampler(prompts: number[][], opts: GenerateOptions, maxNew: number, newIds: number[][], V: number) {
  const rands = prompts.map(() => seededRandom(opts.seed ?? 0));
  const eos = new Set(opts.eosIds ?? []);
  const done = prompts.map(() => maxNew === 0);
  return (mb: MicroBatch<unknown>, r: { logits?: Float32Array; tokens?: Int32Array }): Int32Array => {
    const Bk = mb.prompts.length;
    const out = new Int32Array(2 * Bk).fill(-1);
    for (let b = 0; b < Bk; b++) {
      const g = mb.first + b;
      if (!done[g]) {
        const tok = r.tokens ? r.tokens[b] : sampleToken(r.logits!.subarray(b * V, (b + 1) * V), opts, rands[g]);
        newIds[g].push(tok);
        if (eos.has(tok) || newIds[g].length >= maxNew) done[g] = true;
        out[b] = tok;
      }
      out[Bk + b] = done[g] ? 1 : 0;
    }
    return out;
  };
}

/** The loop above for prompts already checked, `maxNew` from newTokenBudget. */
export async function runPipeline<C extends { dispose(): void }>(runner: PipelineRunner<C>, prompts: number[][], opts: GenerateOptions, maxNew: number): Promise<GenerateResult> {
  const { world, mapping: m } = runner;
  const V = runner.vocabSize;
  const H = runner.config.pretrained_config.hidden_size;
  const B = prompts.length;
  const first = m.isFirstPpRank();
  const last = m.isLastPpRank();
  const M = Math.max(1, Math.min(B, opts.microBatches ?? Math.min(B, m.ppSize)));
  const mbs: MicroBatch<C>[] = splitMicroBatches(prompts, M).map(({ first: at, prompts: ps }) => {
    const lens = ps.map((p) => p.length);
    const S = Math.max(...lens);
    return { first: at, prompts: ps, lens, S, cache: runner.newCache(ps.length, S + Math.max(maxNew, 1)) };
  });
  const prev = m.prevPpRank();
  const next = m.nextPpRank();
  const [HDR, HID, TOK, LOGITS] = [TAG_PIPE, TAG_PIPE + 1, TAG_PIPE + 2, TAG_PIPE + 3];
  const newIds: number[][] = prompts.map(() => []);
  const lastPromptLogits: Float32Array[] = prompts.map(() => new Float32Array(0));
  const sample = last ? sampler(prompts, opts, maxNew, newIds, V) : undefined;
  // The last stage's pass: logits to sample from, or (greedy decode, where the runner can) the tokens.
  const greedyTokens = !((opts.temperature ?? 0) > 0) && runner.greedyStage ? runner.greedyStage.bind(runner) : undefined;
  const stagePass = async (req: ForwardRequest, cache: C, pass: number, hidden?: Float32Array): Promise<{ logits?: Float32Array; hidden?: Float32Array; tokens?: Int32Array }> =>
    (last && pass > 0 && greedyTokens ? { tokens: await greedyTokens(req, cache, hidden) } : runner.forwardStage(req, cache, hidden));
  const span = (k: number, pass: number) => (pass === 0
    ? { micro_batch: k, batch: mbs[k].prompts.length, tokens: mbs[k].lens.reduce((a, b) => a + b, 0) } : { micro_batch: k });
  const t0 = performance.now();
  let firstTokenMs = 0;
  let produced = 0;
  let maxPass = 0;
  // Per micro-batch: when this stage last finished a pass of it (pass >= 1 gives one step latency).
  const passDoneAt = new Map<number, number>();
  const stepMs: number[] = [];
  let ttftMs = 0;
  const passDone = (k: number, pass: number) => {
    const now = performance.now();
    if (pass === 0) { if (!ttftMs) ttftMs = now - t0; } else {
      stepMs.push(now - passDoneAt.get(k)!);
      traceCounter('token latency', { ms: now - passDoneAt.get(k)! });
    }
    passDoneAt.set(k, now);
  };
  try {
    if (first) {
      // Drives the pipeline: results come back in the order the passes were sent (FIFO through every
      // stage). A single stage holds its own results here instead of receiving them.
      const inFlight: [number, number][] = [];
      const own: { res: Int32Array; logits?: Float32Array }[] = [];
      const run = async (k: number, pass: number, ids?: ArrayLike<number>) => {
        const r = await traceSpan(pass === 0 ? 'prefill' : 'decode', () => stagePass(passRequest(mbs[k], pass, ids), mbs[k].cache, pass), span(k, pass));
        if (last) own.push({ res: sample!(mbs[k], r), logits: pass === 0 ? r.logits : undefined });
        else await Promise.all([world.send(Int32Array.of(k, pass), next, HDR), world.send(r.hidden!, next, HID)]);
        inFlight.push([k, pass]);
      };
      for (let k = 0; k < M; k++) await run(k, 0);
      let shown = 0;
      while (inFlight.length) {
        const [k, pass] = inFlight.shift()!;
        const mb = mbs[k];
        const Bk = mb.prompts.length;
        const mine = own.shift();
        const res = mine?.res ?? await traceSpan('pipeline.wait', () => world.recv(prev, TOK, new Int32Array(2 * Bk)));
        if (pass === 0) {
          const lg = mine?.logits ?? await world.recv(prev, LOGITS, new Float32Array(Bk * V));
          for (let b = 0; b < Bk; b++) lastPromptLogits[mb.first + b] = lg.slice(b * V, (b + 1) * V);
          if (!firstTokenMs) firstTokenMs = performance.now() - t0;
        }
        passDone(k, pass);
        for (let b = 0; b < Bk; b++) {
          if (res[b] < 0) continue;
          if (!last) newIds[mb.first + b].push(res[b]);
          produced++;
        }
        const most = Math.max(...newIds.map((r) => r.length));
        if (most > shown) { shown = most; opts.onStep?.(most); }
        maxPass = Math.max(maxPass, pass);
        let alive = false;
        for (let b = 0; b < Bk; b++) if (!res[Bk + b]) alive = true;
        if (alive) await run(k, pass + 1, Array.from(res.subarray(0, Bk), (t) => Math.max(0, t)));
      }
      if (!last) await world.send(Int32Array.of(-1, -1), next, HDR);
    } else {
      // Later stages serve whatever arrives, in order, until the first stage says stop.
      for (;;) {
        const hdr = await world.recv(prev, HDR, new Int32Array(2));
        if (hdr[0] < 0) {
          if (!last) await world.send(hdr, next, HDR);
          break;
        }
        const [k, pass] = hdr;
        const mb = mbs[k];
        const req = passRequest(mb, pass);
        const hidden = await world.recv(prev, HID, new Float32Array(mb.prompts.length * req.seq * H));
        const r = await traceSpan(pass === 0 ? 'prefill' : 'decode', () => stagePass(req, mb.cache, pass, hidden), span(k, pass));
        passDone(k, pass);
        if (!last) {
          await Promise.all([world.send(hdr, next, HDR), world.send(r.hidden!, next, HID)]);
          continue;
        }
        const out = sample!(mb, r);
        for (let b = 0; b < mb.prompts.length; b++) if (out[b] >= 0) produced++;
        maxPass = Math.max(maxPass, pass);
        const sends = [world.send(out, next, TOK)];
        if (pass === 0) sends.push(world.send(r.logits!, next, LOGITS));
        await Promise.all(sends);
      }
    }
  } finally {
    for (const mb of mbs) mb.cache.dispose();
  }
  const totalMs = performance.now() - t0;
  const decodeMs = totalMs - firstTokenMs;
  return {
    promptIds: prompts,
    newIds,
    lastPromptLogits,
    timings: {
      prefill_ms: firstTokenMs,
      decode_ms_per_token: maxPass ? decodeMs / maxPass : 0,
      tokens_per_s: decodeMs > 0 ? Math.max(0, produced - mbs[0].prompts.length) / (decodeMs / 1000) : 0,
      decode_steps: maxPass,
      total_ms: totalMs,
      ...(m.ppSize > 1 ? { micro_batches: M } : {}),
      ttft_ms: ttftMs,
      step_ms: stepMs,
    },
  };
}
