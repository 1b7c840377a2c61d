// Held-out perplexity with the protocol of models/brown-llama-a-reference.json: tokens are the
// concatenation over lines of [BOS] + ids(line) + [EOS]; the first max_tokens + 1 of them are cut into
// non-overlapping windows of `window` inputs, each scored independently (no cache across windows);
// the result is exp(mean NLL) over all predictions.
//
// With pipeline parallelism the windows stream through the stages (no step depends on another, so the
// first stage sends batch after batch and all stages work at once); the last stage scores them, acks each
// batch to the first stage, which keeps at most pp batches in flight (bounded memory in the inboxes), and
// sends the totals back at the end.

import { InputError } from '../core/errors.js';
import { traceSpan } from '../util/trace.js';
import type { EngineRunner, ForwardRequest } from './runtime.js';
import { TAG_PIPE } from './stage-comm.js';
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

/** What perplexity() needs of a runner: the ONNX one (runtime.ts) or the WGSL one (wgsl/runner.ts). */
export interface PerplexityRunner extends Pick<EngineRunner, 'config' | 'vocabSize' | 'mapping' | 'world'> {
  forwardStage(req: ForwardRequest, cache: undefined, hiddenIn?: Float32Array): Promise<{ logits?: Float32Array; hidden?: Float32Array }>;
}

export async function perplexity(runner: PerplexityRunner, tokens: number[], window: number, onWindow?: (n: number) => void): Promise<PerplexityResult> {
  const bc = runner.config.build_config;
  if (window > bc.max_input_len) throw new InputError(`--window ${window} exceeds the engine's max_input_len ${bc.max_input_len}`);
  const nWin = Math.floor((tokens.length - 1) / window);
  if (nWin < 1) throw new InputError(`need at least ${window + 1} tokens for one window, have ${tokens.length}`);
  const V = runner.vocabSize;
  const H = runner.config.pretrained_config.hidden_size;
  const m = runner.mapping;
  const [prev, next] = [m.prevPpRank(), m.nextPpRank()];
  let nll = 0;
  let count = 0;
  const positions = Array.from({ length: window }, (_, i) => i);
  const ACK = TAG_PIPE + 5;
  let unacked = 0;
  for (let w0 = 0; w0 < nWin; w0 += bc.max_batch_size) {
    const B = Math.min(bc.max_batch_size, nWin - w0);
    if (m.ppSize > 1 && m.isFirstPpRank() && unacked >= m.ppSize) {
      await runner.world.recv(prev, ACK, new Int32Array(1));
      unacked--;
    }
    const ids = new Array<number>(B * window);
    for (let b = 0; b < B; b++) for (let i = 0; i < window; i++) ids[b * window + i] = tokens[(w0 + b) * window + i];
    const hiddenIn = m.isFirstPpRank() ? undefined : await runner.world.recv(prev, TAG_PIPE + 1, new Float32Array(B * window * H));
    const out = await traceSpan('prefill', () => runner.forwardStage({
      batch: B, seq: window, ids,
      seqlensK: new Int32Array(B).fill(window - 1),
      totalSeq: window,
      positions: Array.from({ length: B }, () => positions).flat(),
      npos: window,
    }, undefined, hiddenIn), { batch: B, tokens: B * window });
    if (!m.isLastPpRank()) {
      await runner.world.send(out.hidden!, next, TAG_PIPE + 1);
      unacked++;
      onWindow?.(B);
      continue;
    }
    const logits = out.logits!;
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
    if (m.ppSize > 1) await runner.world.send(Int32Array.of(w0), next, ACK);
    onWindow?.(B);
  }
  if (m.ppSize > 1) {
    for (; m.isFirstPpRank() && unacked > 0; unacked--) await runner.world.recv(prev, ACK, new Int32Array(1));
    // The last stage scored every window; the first stage (rank 0 among them) reports.
    const totals = Float64Array.of(nll, count);
    if (m.isLastPpRank()) await runner.world.send(totals, next, TAG_PIPE + 4);
    else if (m.isFirstPpRank()) await runner.world.recv(prev, TAG_PIPE + 4, totals);
    [nll, count] = totals;
  }
  const mean = nll / count;
  return { ppl: Math.exp(mean), mean_nll: mean, tokens: count };
}
