// Where a CPU prefill's time goes (issue 14): onnxruntime's own profile of whole-prompt forwards on a fresh
// KV cache, split by op and, for MatMulNBits, by linear (K→N), next to the forward's wall time.
// Usage: node scripts/cpu/prefill-profile.mjs ENGINE [PROMPT_LEN] [REPS] [THREADS]   (one JSON line)
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../../dist/engine/engine.js';
import { EngineRunner } from '../../dist/engine/runtime.js';

const [dir, promptArg, repsArg, threadsArg] = process.argv.slice(2);
const P = Number(promptArg ?? 64);
const reps = Number(repsArg ?? 5);
const threads = Number(threadsArg ?? 1);
const none = () => { throw new Error('no collectives at tp 1'); };
const world = { rank: 0, size: 1, ...Object.fromEntries(['barrier', 'broadcast', 'allReduce', 'allGather', 'gather', 'scatter', 'reduceScatter', 'broadcastObject', 'send', 'recv', 'newGroup'].map((k) => [k, none])) };
const engine = await Engine.fromDir(dir, 0, { worldSize: 1, verify: false });
const prof = mkdtempSync(join(tmpdir(), 'tprun-prof-'));
const plain = await EngineRunner.load(engine, world, { device: 'cpu', threads });
const profiled = await EngineRunner.load(engine, world, { device: 'cpu', threads, sessionOptions: { enableProfiling: true, profileFilePrefix: join(prof, 'p') } });
const V = plain.vocabSize;
const prompt = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % V);
const prefill = async (r) => {
  const cache = r.newCache(1, P + 1);
  const t0 = performance.now();
  await r.forward({ batch: 1, seq: P, ids: prompt, seqlensK: Int32Array.of(P - 1), totalSeq: P, positions: [P - 1], npos: 1 }, cache);
  const ms = performance.now() - t0;
  cache.dispose();
  return ms;
};
await prefill(plain); await prefill(profiled); // warm-up (first-run allocations, prepacking)
const wallPlain = []; const wall = [];
for (let i = 0; i < reps; i++) { wallPlain.push(await prefill(plain)); wall.push(await prefill(profiled)); }
await profiled.close();
await plain.close();
const file = readdirSync(prof).find((f) => f.endsWith('.json'));
const ev = JSON.parse(readFileSync(join(prof, file), 'utf8'));
rmSync(prof, { recursive: true, force: true });
// Drop the warm-up run's events: keep those after the second model_run's start.
const runs = ev.filter((e) => e.name === 'model_run');
const after = runs[0].ts + runs[0].dur;
const timed = runs.slice(1);
const nodes = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts > after);
const n = timed.length;
const r3 = (x) => Math.round(x * 1000) / 1000;
const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const group = (e) => {
  const op = e.args?.op_name;
  if (op === 'MatMulNBits') {
    const i = Object.values(e.args.input_type_shape[0])[0];
    return `MatMulNBits ${i.at(-1)}→${Object.values(e.args.output_type_shape[0])[0].at(-1)} M=${i.slice(0, -1).reduce((a, b) => a * b, 1)}`;
  }
  return op;
};
const m = new Map();
for (const e of nodes) { const k = group(e); const o = m.get(k) ?? { n: 0, t: 0 }; o.n++; o.t += e.dur; m.set(k, o); }
const kernelUs = nodes.reduce((s, e) => s + e.dur, 0);
process.stdout.write(`${JSON.stringify({
  engine: dir, threads, prompt_tokens: P, runs: n,
  wall_ms_unprofiled_median: r3(med(wallPlain)),
  prefill_tok_s_unprofiled: r3(P / (med(wallPlain) / 1000)),
  wall_ms_median: r3(med(wall)),
  run_ms_median: r3(med(timed.map((r) => r.dur)) / 1000),
  kernel_ms_per_run: r3(kernelUs / n / 1000),
  ops: [...m.entries()].sort((a, b) => b[1].t - a[1].t).map(([k, o]) => ({ op: k, per_run: r3(o.n / n), ms_per_run: r3(o.t / n / 1000), share: r3(o.t / kernelUs) })),
})}\n`);
