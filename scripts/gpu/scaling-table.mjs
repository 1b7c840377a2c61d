// The table of issue 8 from scripts/gpu/scaling.sh's JSON lines: per model and tp, the GPUs the ranks ran
// on, prefill and decode tokens/s, the decode speed-up over tp 1 and the scaling efficiency (speed-up / tp),
// a decode step's share in the host all-reduce and off the GPU at all-reduce points, perplexity and greedy
// tokens against tp 1 (and transformers for brown-llama-a), and each GPU's memory above idle.
//   node scripts/gpu/scaling-table.mjs scaling.jsonl
import { readFileSync } from 'node:fs';

const rows = readFileSync(process.argv[2], 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const by = new Map();
for (const r of rows) {
  const k = `${r.model} ${r.tp}`;
  by.set(k, { ...(by.get(k) ?? {}), ...r, [r.step]: r });
}
const f = (x, d = 1) => (x == null || Number.isNaN(x) ? '—' : typeof x === 'number' ? x.toFixed(d) : String(x));
const pct = (x) => (x == null ? '—' : `${(100 * x).toFixed(0)} %`);
const out = [
  '| model | tp | --gpus (ranks per GPU) | prefill tok/s | decode tok/s | decode vs tp 1 | efficiency | step in all-reduce | step off the GPU at all-reduce points | perplexity (Δ vs tp 1) | greedy = tp 1 | greedy = transformers | MiB above idle per GPU | placement |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of by.values()) {
  const one = by.get(`${r.model} 1`);
  const b = r.bench ?? {};
  const b1 = one?.bench ?? {};
  const speed = b.decode_tokens_per_s && b1.decode_tokens_per_s ? b.decode_tokens_per_s / b1.decode_tokens_per_s : null;
  const perGpu = r.gpus === 'default' ? 'default adapter' : (() => {
    const ids = r.gpus.split(',');
    const n = Math.max(...Object.values(ids.reduce((c, g) => ({ ...c, [g]: (c[g] ?? 0) + 1 }), {})));
    return `${r.gpus} (${n})`;
  })();
  const p = r.perplexity?.ppl;
  const p1 = one?.perplexity?.ppl;
  const g = r.greedy ?? {};
  const place = b.placement_ok == null ? (b.mib_above_idle_per_gpu ? 'not listed by nvidia-smi' : '—') : b.placement_ok ? 'each rank on its GPU' : 'MISMATCH';
  out.push(`| ${[
    r.model === 'tiny' ? 'TinyLlama-1.1B shape' : 'brown-llama-a', r.tp, perGpu, f(b.prefill_tokens_per_s, 0), f(b.decode_tokens_per_s, 1),
    speed == null ? '—' : `${speed.toFixed(2)}×`, speed == null ? '—' : `${(speed / r.tp).toFixed(2)}`,
    pct(b.allreduce_share_of_decode), pct(b.crossing_share_of_decode),
    p == null ? '—' : `${p.toFixed(4)}${p1 && r.tp !== 1 ? ` (${(((p - p1) / p1) * 100).toExponential(1)} %)` : ''}`,
    g.greedy_equal_tp1 == null ? '—' : `${g.greedy_equal_tp1}/${g.prompts}`, g.greedy_equal_transformers == null ? '—' : `${g.greedy_equal_transformers}/${g.prompts}`,
    b.mib_above_idle_per_gpu ? Object.entries(b.mib_above_idle_per_gpu).map(([i, m]) => `${i}: ${m}`).join(', ') : '—', place,
  ].join(' | ')} |`);
}
console.log(out.join('\n'));
