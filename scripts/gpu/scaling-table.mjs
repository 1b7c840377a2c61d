// The table of issue 8 from scripts/gpu/scaling.sh's JSON lines: per model and tp, the GPUs the ranks ran
// on, prefill and decode tokens/s, the decode speed-up over tp 1 and the scaling efficiency (speed-up / tp),
// a decode forward's share in the host all-reduce and from the partial sums on the host to their sum queued
// back (the GPU idle then), perplexity and greedy tokens against tp 1 (and transformers for brown-llama-a),
// each GPU's memory above idle while perplexity ran, and whether each rank was listed on its own GPU.
// Speeds are the median over the bench rounds with their range; a ratio to tp 1 is the median of the
// rounds' ratios (each round times every tp in turn). A step that failed shows its error in the last column.
//   node scripts/gpu/scaling-table.mjs scaling.jsonl
import { readFileSync } from 'node:fs';

const rows = readFileSync(process.argv[2], 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const by = new Map();
for (const r of rows) {
  const k = `${r.model} ${r.tp}`;
  const o = by.get(k) ?? { model: r.model, tp: r.tp, gpus: r.gpus, benches: [] };
  if (r.step === 'bench') o.benches.push(r);
  else o[r.step] = r;
  by.set(k, o);
}
const med = (xs) => { const v = xs.filter((x) => x != null).sort((a, b) => a - b); return v.length ? v[Math.floor((v.length - 1) / 2)] : null; };
const range = (xs) => { const v = xs.filter((x) => x != null); return v.length > 1 ? `${Math.min(...v).toFixed(v[0] >= 100 ? 0 : 1)}–${Math.max(...v).toFixed(v[0] >= 100 ? 0 : 1)}` : ''; };
// Per round, this tp's speed over tp 1's in the same round.
const roundRatios = (r, one, k) => r.benches.map((b) => { const b1 = one?.benches.find((x) => x.round === b.round); return b[k] && b1?.[k] ? b[k] / b1[k] : null; });
const f = (x, d = 1) => (x == null || Number.isNaN(x) ? '—' : typeof x === 'number' ? x.toFixed(d) : String(x));
const pct = (x) => (x == null ? '—' : `${(100 * x).toFixed(0)} %`);
const out = [
  '| model | tp | --gpus (ranks per GPU) | prefill tok/s [range] (vs tp 1) | decode tok/s [range] (vs tp 1) | efficiency | decode forward in all-reduce | decode forward with the GPU idle at all-reduce points (at least) | perplexity (Δ vs tp 1) | greedy = tp 1 | greedy = transformers | MiB above idle per GPU | placement | errors |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of by.values()) {
  const one = by.get(`${r.model} 1`);
  const col = (k) => med(r.benches.map((b) => b[k]));
  const b = Object.fromEntries(['prefill_tokens_per_s', 'decode_tokens_per_s', 'allreduce_share_of_decode_forward', 'host_share_of_decode_forward'].map((k) => [k, col(k)]));
  const dec = med(roundRatios(r, one, 'decode_tokens_per_s'));
  const pre = med(roundRatios(r, one, 'prefill_tokens_per_s'));
  const perGpu = r.gpus === 'default' ? 'default adapter' : (() => {
    const ids = r.gpus.split(',');
    const n = Math.max(...Object.values(ids.reduce((c, g) => ({ ...c, [g]: (c[g] ?? 0) + 1 }), {})));
    return `${r.gpus} (${n})`;
  })();
  const p = r.perplexity ?? {};
  const p1 = one?.perplexity?.ppl;
  const g = r.greedy ?? {};
  const place = p.placement_ok == null ? (p.mib_above_idle_per_gpu ? 'nvidia-smi listed no process' : '—') : p.placement_ok ? 'each rank on its GPU' : 'MISMATCH';
  const errors = [...['build', 'greedy', 'perplexity'].filter((s) => r[s]?.error).map((s) => `${s}: ${r[s].error}`),
    ...r.benches.filter((x) => x.error).map((x) => `bench round ${x.round}: ${x.error}`)].join('; ');
  const spread = (k) => { const s = range(r.benches.map((x) => x[k])); return s ? ` [${s}]` : ''; };
  const vs = (x, k, key) => `${f(x, x >= 100 ? 0 : 1)}${spread(key)}${k == null || r.tp === 1 ? '' : ` (${k.toFixed(2)}×)`}`;
  out.push(`| ${[
    r.model === 'tiny' ? 'TinyLlama-1.1B shape' : 'brown-llama-a', r.tp, perGpu, vs(b.prefill_tokens_per_s, pre, 'prefill_tokens_per_s'), vs(b.decode_tokens_per_s, dec, 'decode_tokens_per_s'),
    dec == null ? '—' : (dec / r.tp).toFixed(2), pct(b.allreduce_share_of_decode_forward), pct(b.host_share_of_decode_forward),
    p.ppl == null ? '—' : `${p.ppl.toFixed(4)}${p1 && r.tp !== 1 ? ` (${(((p.ppl - p1) / p1) * 100).toExponential(1)} %)` : ''}`,
    g.greedy_equal_tp1 == null ? '—' : `${g.greedy_equal_tp1}/${g.prompts}`, g.greedy_equal_transformers == null ? '—' : `${g.greedy_equal_transformers}/${g.prompts}`,
    p.mib_above_idle_per_gpu ? Object.entries(p.mib_above_idle_per_gpu).map(([i, m]) => `${i}: ${m}`).join(', ') : '—', place, errors || '',
  ].join(' | ')} |`);
}
console.log(out.join('\n'));
