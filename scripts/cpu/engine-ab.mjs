// Two CPU engines in one process, alternating (issue 14, session 10): on a loaded machine, pairs of
// calls made back to back see the same load, so their ratio means more than either's speed. Per round,
// in alternating order: a P-token prefill on a fresh cache, then S decode steps, for each engine.
// Usage: node scripts/cpu/engine-ab.mjs ENGINE_A ENGINE_B [PROMPT_LEN] [STEPS] [ROUNDS] [THREADS]
// One JSON line: medians of each engine's prefill ms and decode ms/step, and of the per-round B/A ratios.
import { Engine } from '../../dist/engine/engine.js';
import { EngineRunner } from '../../dist/engine/runtime.js';

const [a, b, pArg, sArg, rArg, tArg] = process.argv.slice(2);
const P = Number(pArg ?? 64), S = Number(sArg ?? 16), R = Number(rArg ?? 7), threads = Number(tArg ?? 1);
const none = () => { throw new Error('no collectives at tp 1'); };
const world = { rank: 0, size: 1, ...Object.fromEntries(['barrier', 'broadcast', 'allReduce', 'allGather', 'gather', 'scatter', 'reduceScatter', 'broadcastObject', 'send', 'recv', 'newGroup'].map((k) => [k, none])) };
const runners = [];
for (const dir of [a, b]) runners.push(await EngineRunner.load(await Engine.fromDir(dir, 0, { worldSize: 1, verify: false }), world, { device: 'cpu', threads }));
const V = runners[0].vocabSize;
const prompt = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % V);
const argmax = (x) => { let m = 0; for (let i = 1; i < x.length; i++) if (x[i] > x[m]) m = i; return m; };
async function once(r) {
  const cache = r.newCache(1, P + S + 1);
  let t = performance.now();
  let logits = await r.forward({ batch: 1, seq: P, ids: prompt, seqlensK: Int32Array.of(P - 1), totalSeq: P, positions: [P - 1], npos: 1 }, cache);
  const prefill = performance.now() - t;
  const ids = [argmax(logits)];
  t = performance.now();
  for (let s = 0; s < S; s++) {
    logits = await r.forward({ batch: 1, seq: 1, ids: [ids.at(-1)], seqlensK: Int32Array.of(P + s), totalSeq: P + s + 1, positions: [0], npos: 1 }, cache);
    ids.push(argmax(logits));
  }
  const decode = (performance.now() - t) / S;
  cache.dispose();
  return { prefill, decode, ids };
}
for (const r of runners) await once(r); // warm-up
const res = [[], []];
for (let i = 0; i < R; i++) for (const k of (i % 2 ? [1, 0] : [0, 1])) res[k].push(await once(runners[k]));
for (const r of runners) await r.close();
const med = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];
const r3 = (x) => Math.round(x * 1000) / 1000;
const col = (k, f) => res[k].map((x) => x[f]);
const ratio = (f) => res[1].map((x, i) => x[f] / res[0][i][f]);
process.stdout.write(`${JSON.stringify({
  a, b, threads, prompt_tokens: P, decode_steps: S, rounds: R,
  prefill_ms: [r3(med(col(0, 'prefill'))), r3(med(col(1, 'prefill')))],
  decode_ms_per_step: [r3(med(col(0, 'decode'))), r3(med(col(1, 'decode')))],
  prefill_time_ratio_b_over_a: { median: r3(med(ratio('prefill'))), min: r3(Math.min(...ratio('prefill'))), max: r3(Math.max(...ratio('prefill'))) },
  decode_time_ratio_b_over_a: { median: r3(med(ratio('decode'))), min: r3(Math.min(...ratio('decode'))), max: r3(Math.max(...ratio('decode'))) },
  same_greedy_ids: res[0].every((x, i) => x.ids.join() === res[1][i].ids.join()),
})}\n`);
