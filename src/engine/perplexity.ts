// Held-out perplexity with the protocol of models/brown-llama-a-reference.json: tokens are the
// concatenation over lines of [BOS] + ids(line) + [EOS]; the first max_tokens + 1 of them are cut into
// non-overlapping windows of `window` inputs, each scored independently (no cache across windows);
// the result is exp(mean NLL) over all predictions.

import { InputError } from '../checkpoint/errors.js';
import { traceSpan } from '../util/trace.js';
import type { EngineRunner } from './runtime.js';
import type { TextTokenizer } from './tokenizer.js';

export function perplexityTokens(tok: TextTokenizer, text: string, bos: number, eos: number, limit: number): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    out.push(bos, ...tok.encode(line, { special: false }), eos);
    if (out.length >= limit) break;
  }
  return out.slice(0, limit);
}

export interface PerplexityResult { ppl: number; mean_nll: number; tokens: number }

export async function perplexity(runner: EngineRunner, tokens: number[], window: number, onWindow?: (n: number) => void): Promise<PerplexityResult> {
  const bc = runner.config.build_config;
  if (window > bc.max_input_len) throw new InputError(`--window ${window} exceeds the engine's max_input_len ${bc.max_input_len}`);
  const nWin = Math.floor((tokens.length - 1) / window);
  if (nWin < 1) throw new InputError(`need at least ${window + 1} tokens for one window, have ${tokens.length}`);
  const V = runner.vocabSize;
  let nll = 0;
  let count = 0;
  const positions = Array.from({ length: window }, (_, i) => i);
  for (let w0 = 0; w0 < nWin; w0 += bc.max_batch_size) {
    const B = Math.min(bc.max_batch_size, nWin - w0);
    const ids = new Array<number>(B * window);
    for (let b = 0; b < B; b++) for (let i = 0; i < window; i++) ids[b * window + i] = tokens[(w0 + b) * window + i];
    const logits = await traceSpan('prefill', () => runner.forward({
      batch: B, seq: window, ids,
      seqlensK: new Int32Array(B).fill(window - 1),
      totalSeq: window,
      positions: Array.from({ length: B }, () => positions).flat(),
      npos: window,
    }), { batch: B, tokens: B * window });
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < window; i++) {
        const row = logits.subarray((b * window + i) * V, (b * window + i + 1) * V);
        const target = tokens[(w0 + b) * window + i + 1];
        let max = -Infinity;
        for (let v = 0; v < V; v++) if (row[v] > max) max = row[v];
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(row[v] - max);
        nll += Math.log(sum) + max - row[target];
        count++;
      }
    }
    onWindow?.(B);
  }
  const mean = nll / count;
  return { ppl: Math.exp(mean), mean_nll: mean, tokens: count };
}
