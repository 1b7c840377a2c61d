// Small helpers the benchmarks share.
import fs from 'node:fs';
import path from 'node:path';
import type { RankStats } from '../checkpoint/convert.js';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Bytes of the files under `dir`, subdirectories included. */
export function dirBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size;
  }
  return n;
}

/** The ranks' stats of one `tprun convert` run (checkpoint/stats-env.ts: a JSON file per rank), in rank order. */
export function readRankStats(dir: string): RankStats[] {
  return fs.readdirSync(dir).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as RankStats).sort((a, b) => a.rank - b.rank);
}

/**
 * Threads that wrote a conversion's rank files at once, as the conversion recorded what it ran
 * (RankStats.threads, from util/threads.ts's rule): not a count of the worker ids, since each rank gets
 * a worker of its own and fewer of them may run at once than there are ranks.
 */
export function convertThreads(stats: RankStats[]): number {
  return Math.max(1, ...stats.map((s) => s.threads ?? 1));
}
