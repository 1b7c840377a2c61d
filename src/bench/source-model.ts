// The checkpoint a data-path benchmark (bench build, bench convert) copies and converts: the one given,
// or one generated for it; read once before timing, so that every tool timed after reads it from the
// page cache alike.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

/**
 * `a.model` when given, else a checkpoint of `a.preset` generated into `work`/model, its generation
 * reported as a JSON line of `bench` on stdout (before the result line).
 */
export async function sourceModel(bench: string, a: { preset: string; layers?: number; model?: string }, work: string): Promise<string> {
  if (a.model) return path.resolve(a.model);
  const { generateCheckpoint } = await import('../checkpoint/generate.js');
  const model = path.join(work, 'model');
  const t0 = performance.now();
  const g = generateCheckpoint({ preset: a.preset, out: model, layers: a.layers });
  process.stdout.write(JSON.stringify({ bench, phase: 'generate', preset: a.preset, bytes: g.bytes, seconds: (performance.now() - t0) / 1000 }) + '\n');
  return model;
}

/** Every file of `dir` read once (by `cat`, outside this process's memory). */
export async function warmPageCache(dir: string): Promise<void> {
  for (const f of fs.readdirSync(dir)) await execa('cat', [path.join(dir, f)], { stdout: 'ignore' });
}
