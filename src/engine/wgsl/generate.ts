// The generation loop on the WGSL runtime (pp 1): prefill each prompt, then decode steps. Greedy decode
// (temperature 0) takes the argmax on the GPU, so a step sends one token id each way; with sampling the
// step reads the row's logits back and samples on the host exactly as the ONNX path does.
// At pp > 1 the ONNX path's pipeline loop runs the stages (../generate.ts runPipeline: micro-batches, the
// hand-offs, sampling on the last stage), so both runtimes give the same tokens by the same rules.

import { traceSpan } from '../../util/trace.js';
import { checkPrompts, newTokenBudget, runPipeline, type GenerateOptions, type GenerateResult } from '../generate.js';
import { sampleToken, seededRandom } from '../sampling.js';
import type { WgslCache, WgslRunner } from './runner.js';

export async function generateWgsl(runner: WgslRunner, prompts: number[][], opts: GenerateOptions): Promise<GenerateResult> {
  const bc = runner.config.build_config;
  const V = runner.vocabSize;
  const B = prompts.length;
  checkPrompts(bc, V, prompts);
  const S = Math.max(...prompts.map((p) => p.length));
  const { maxNew } = newTokenBudget(bc, prompts, opts.maxNewTokens);
  if (runner.mapping.ppSize > 1) return runPipeline<WgslCache>(runner, prompts, opts, maxNew);
  const cache = runner.newCache(B, S + Math.max(maxNew, 1));
  const lens = prompts.map((p) => p.length);
  const greedy = !((opts.temperature ?? 0) > 0);
  try {
    const t0 = performance.now();
    const lastPromptLogits: Float32Array[] = [];
    await traceSpan('prefill', async () => {
      for (let b = 0; b < B; b++) {
        lastPromptLogits.push(await runner.forwardRow(cache, b, prompts[b], 0, [lens[b] - 1]));
      }
    }, { batch: B, tokens: lens.reduce((a, b) => a + b, 0) });
    const prefillMs = performance.now() - t0;
    // Latency figures (../monitor.ts): the first token at the first mark, then one step per mark.
    let ttftMs = 0;
    const stepMs: number[] = [];
    let lastAt = t0;
    const mark = () => {
      const now = performance.now();
      if (!ttftMs) ttftMs = now - t0;
      else stepMs.push(now - lastAt);
      lastAt = now;
    };

    const rands = prompts.map(() => seededRandom(opts.seed ?? 0));
    const eos = new Set(opts.eosIds ?? []);
    const newIds: number[][] = prompts.map(() => []);
    const done = prompts.map(() => maxNew === 0);
    // Per row: the next token (greedy, chosen on the GPU) or the logits to sample it from.
    const nextTok: number[] = greedy ? lastPromptLogits.map((l) => sampleToken(l, opts, rands[0])) : [];
    const logits: Float32Array[] = lastPromptLogits.slice();
    let steps = 0;
    const t1 = performance.now();
    if (greedy && B === 1 && runner.group.size === 1 && maxNew > 0) {
      // The fast path: tokens stay on the GPU, the host follows one step behind (runner.decodeGreedyPipelined).
      const take = (tok: number) => {
        mark();
        newIds[0].push(tok);
        opts.onStep?.(newIds[0].length);
        return !(eos.has(tok) || newIds[0].length >= maxNew);
      };
      if (take(nextTok[0])) steps = await traceSpan('decode', () => runner.decodeGreedyPipelined(cache, 0, nextTok[0], lens[0], maxNew - 1, take));
      done[0] = true;
    }
    for (let step = 0; step < maxNew && !done.every(Boolean); step++) {
      const cur = prompts.map((_, b) => {
        if (done[b]) return 0;
        const tok = greedy ? nextTok[b] : sampleToken(logits[b], opts, rands[b]);
        newIds[b].push(tok);
        if (eos.has(tok) || newIds[b].length >= maxNew) done[b] = true;
        return tok;
      });
      mark();
      opts.onStep?.(step + 1);
      if (done.every(Boolean)) break;
      await traceSpan('decode', async () => {
        for (let b = 0; b < B; b++) {
          if (done[b]) continue; // a finished row's cache is never read again
          const pos = lens[b] + step;
          if (greedy) nextTok[b] = await runner.decodeGreedy(cache, b, cur[b], pos);
          else logits[b] = await runner.forwardRow(cache, b, [cur[b]], pos, [0]);
        }
      });
      steps++;
    }
    const decodeMs = performance.now() - t1;
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
        total_ms: performance.now() - t0,
        ttft_ms: ttftMs,
        step_ms: stepMs,
      },
    };
  } finally {
    cache.dispose();
  }
}
