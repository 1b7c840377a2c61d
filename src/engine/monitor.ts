// What a deployment watches per rank: peak resident memory, the bytes its weights and KV caches take on
// the host and on the GPU, and latency percentiles. Every rank measures its own; one small gather at the
// end of a run brings them to rank 0, which prints them (`--json`, or one compact line on stderr). Under
// `--trace` the same figures go on the timeline as counter events beside the phases.

import type { World } from '../rank/types.js';
import { traceCounter } from '../util/trace.js';
import type { EngineRunner } from './runtime.js';

/** What the figures need of a runner (the ONNX one and the WGSL one alike). */
export type MemoryReporter = Pick<EngineRunner, 'memory'> & { kernels?: 'ort' | 'wgsl'; kvDtype?: string };

// Per-rank strings travel as indices into these lists (the gather carries numbers); 0 = not said.
const KERNELS = ['ort', 'wgsl'] as const;
const KV_DTYPES = ['float32', 'float16', 'bfloat16', 'int8', 'fp8'];

export interface Percentiles { p50: number | null; p90: number | null; p99: number | null; steps: number }

/**
 * Nearest-rank percentiles (the smallest sample with at least p% of the samples at or below it), so each
 * figure is a latency that was measured; null where there are no samples (e.g. --max-new-tokens 1).
 */
export function percentiles(xs: readonly number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s.length ? s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)] : null;
  return { p50: at(50), p90: at(90), p99: at(99), steps: s.length };
}

/** Peak resident set of this process so far, in bytes (resourceUsage gives KiB). */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

export interface RankFigures {
  rank: number;
  peak_rss_bytes: number;
  engine_bytes: { host: number; gpu: number };
  kv_cache_bytes: { host: number; gpu: number };
  /** Whose kernels ran this rank's engine, and the KV cache's element type, where the runner says. */
  kernels?: 'ort' | 'wgsl';
  kv_cache_dtype?: string;
  [latency: string]: unknown;
}

/** The memory counters of this rank on the trace timeline (a no-op without --trace). */
export function traceMemory(runner: MemoryReporter): void {
  const m = runner.memory();
  traceCounter('memory', {
    peak_rss_bytes: peakRssBytes(),
    engine_host_bytes: m.engine_bytes.host, engine_gpu_bytes: m.engine_bytes.gpu,
    kv_cache_host_bytes: m.kv_cache_bytes.host, kv_cache_gpu_bytes: m.kv_cache_bytes.gpu,
  });
}

const FIELDS = 12;
const r2 = (x: number | null) => x === null || Number.isNaN(x) ? null : Math.round(x * 100) / 100;

/**
 * Called by every rank of the world at the end of a run: this rank's figures, with `steps` (ms each) as
 * the latency series named `names.steps` and `first` (ms) as `names.first`. Rank 0 gets every rank's
 * figures in rank order; the others get undefined.
 */
export async function gatherRankFigures(
  world: World, runner: MemoryReporter, steps: readonly number[], first: number | undefined,
  names: { first: string; steps: string } = { first: 'ttft_ms', steps: 'decode_ms' },
): Promise<RankFigures[] | undefined> {
  const m = runner.memory();
  const p = percentiles(steps);
  const mine = Float64Array.of(
    peakRssBytes(), m.engine_bytes.host, m.engine_bytes.gpu, m.kv_cache_bytes.host, m.kv_cache_bytes.gpu,
    first ?? NaN, p.p50 ?? NaN, p.p90 ?? NaN, p.p99 ?? NaN, p.steps,
    runner.kernels ? KERNELS.indexOf(runner.kernels) + 1 : 0, runner.kvDtype ? KV_DTYPES.indexOf(runner.kvDtype) + 1 : 0,
  );
  traceMemory(runner);
  traceCounter('latency', {
    ...(first !== undefined ? { [names.first]: first } : {}),
    ...(p.steps ? { [`${names.steps}_p50`]: p.p50!, [`${names.steps}_p90`]: p.p90!, [`${names.steps}_p99`]: p.p99! } : {}),
  });
  const all = await world.gather(mine, 0);
  if (!all) return undefined;
  const out: RankFigures[] = [];
  for (let r = 0; r < world.size; r++) {
    const f = all.subarray(r * FIELDS, (r + 1) * FIELDS);
    out.push({
      rank: r,
      peak_rss_bytes: f[0],
      engine_bytes: { host: f[1], gpu: f[2] },
      kv_cache_bytes: { host: f[3], gpu: f[4] },
      ...(f[10] > 0 ? { kernels: KERNELS[f[10] - 1] } : {}),
      ...(f[11] > 0 ? { kv_cache_dtype: KV_DTYPES[f[11] - 1] } : {}),
      ...(Number.isNaN(f[5]) ? {} : { [names.first]: r2(f[5]) }),
      [names.steps]: { p50: r2(f[6]), p90: r2(f[7]), p99: r2(f[8]), steps: f[9] },
    });
  }
  return out;
}

/** Byte counts of several ranks in one unit: `412.1/398.0 MB`. */
function bytesOf(xs: number[]): string {
  const top = Math.max(...xs);
  const [div, unit, digits] = top >= 1e9 ? [1e9, 'GB', 2] : top >= 1e6 ? [1e6, 'MB', 1] : [1e3, 'kB', 1];
  return `${xs.map((x) => (x / div).toFixed(digits)).join('/')} ${unit}`;
}

/**
 * One compact line for a person: each figure once, its ranks' values separated by '/', e.g.
 * `ranks 0/1 · peak RSS 210.3/205.1 MB · engine host 4.2/4.2 MB · KV host 0.3/0.3 MB · ttft 9.1/9.0 ms · decode p50/p90/p99 2.1/2.4/3.0 | 2.1/2.3/2.9 ms`.
 */
export function figuresLine(ranks: RankFigures[], names: { first: string; steps: string } = { first: 'ttft_ms', steps: 'decode_ms' }): string {
  const per = (f: (r: RankFigures) => string) => ranks.map(f).join('/');
  const parts = [`ranks ${per((r) => String(r.rank))}`, `peak RSS ${bytesOf(ranks.map((r) => r.peak_rss_bytes))}`];
  for (const [label, key] of [['engine', 'engine_bytes'], ['KV', 'kv_cache_bytes']] as const) {
    for (const where of ['host', 'gpu'] as const) {
      if (ranks.some((r) => r[key][where] > 0)) parts.push(`${label} ${where} ${bytesOf(ranks.map((r) => r[key][where]))}`);
    }
  }
  const ms = (x: unknown) => typeof x === 'number' ? x.toFixed(1) : '-';
  if (ranks.some((r) => r[names.first] !== undefined)) parts.push(`${names.first.replace(/_ms$/, '').replace(/_/g, ' ')} ${per((r) => ms(r[names.first]))} ms`);
  const series = (r: RankFigures) => r[names.steps] as Percentiles;
  if (ranks.some((r) => series(r).steps > 0)) {
    parts.push(`${names.steps.replace(/_ms$/, '')} p50/p90/p99 ${ranks.map((r) => `${ms(series(r).p50)}/${ms(series(r).p90)}/${ms(series(r).p99)}`).join(' | ')} ms`);
  }
  if (ranks.some((r) => r.kernels)) parts.push(`kernels ${per((r) => r.kernels ?? '-')}`);
  if (ranks.some((r) => r.kv_cache_dtype)) parts.push(`KV ${per((r) => r.kv_cache_dtype ?? '-')}`);
  return parts.join(' · ');
}
