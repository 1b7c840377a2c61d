// Where a CPU decode step's time goes (issue 14): onnxruntime's own profile of decode-only steps
// (a second, profiled session runs them on the KV cache the unprofiled one prefilled), split by op and,
// for MatMulNBits, by linear (qkv, dense, fc, gate, proj, lm_head), next to the step's wall time
// (EngineRunner.forward: feeds, session.run, logits) and argmax in JS.
// Usage: node scripts/cpu/decode-profile.mjs ENGINE [STEPS] [PROMPT_LEN] [THREADS]   (one JSON line)
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../../dist/engine/engine.js';
import { EngineRunner } from '../../dist/engine/runtime.js';

const [dir, stepsArg, promptArg, threadsArg] = process.argv.slice(2);
const steps = Number(stepsArg ?? 32);
const P = Number(promptArg ?? 64);
const threads = Number(threadsArg ?? 1);
// tp = 1: the runner never communicates, but binds the world's collectives.
const none = () => { throw new Error('no collectives at tp 1'); };
const world = { rank: 0, size: 1, ...Object.fromEntries(['barrier', 'broadcast', 'allReduce', 'allGather', 'gather', 'scatter', 'reduceScatter', 'broadcastObject', 'send', 'recv', 'newGroup'].map((k) => [k, none])) };
const engine = await Engine.fromDir(dir, 0, { worldSize: 1, verify: false });
const prof = mkdtempSync(join(tmpdir(), 'tprun-prof-'));
const plain = await EngineRunner.load(engine, world, { device: 'cpu', threads });
const profiled = await EngineRunner.load(engine, world, { device: 'cpu', threads, sessionOptions: { enableProfiling: true, profileFilePrefix: join(prof, 'p') } });
const V = plain.vocabSize;
const prompt = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % V);
const cache = plain.newCache(1, P + 2 * steps + 1);
const argmax = (a) => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };
let logits = await plain.forward({ batch: 1, seq: P, ids: prompt, seqlensK: Int32Array.of(P - 1), totalSeq: P, positions: [P - 1], npos: 1 }, cache);
const step = async (r, s) => {
  const t0 = performance.now();
  logits = await r.forward({ batch: 1, seq: 1, ids: [argmax(logits)], seqlensK: Int32Array.of(P + s), totalSeq: P + s + 1, positions: [0], npos: 1 }, cache);
  return performance.now() - t0;
};
// Unprofiled steps first (the wall time without the profiler's own cost), then the profiled ones.
const wallPlain = [];
for (let s = 0; s < steps; s++) wallPlain.push(await step(plain, s));
const wall = [];
for (let s = steps; s < 2 * steps; s++) wall.push(await step(profiled, s));
const ta = performance.now();
for (let i = 0; i < 100; i++) argmax(logits);
const argmaxMs = (performance.now() - ta) / 100;
cache.dispose();
await profiled.close();
await plain.close();
const file = readdirSync(prof).find((f) => f.endsWith('.json'));
const ev = JSON.parse(readFileSync(join(prof, file), 'utf8'));
rmSync(prof, { recursive: true, force: true });
const runs = ev.filter((e) => e.name === 'model_run');
const nodes = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
const n = runs.length;
const r3 = (x) => Math.round(x * 1000) / 1000;
const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const group = (e) => {
  const op = e.args?.op_name;
  // Node names are ORT's own (MatMulNBits_3); the shapes say which linear: [.., K] → [.., N].
  if (op === 'MatMulNBits') return `MatMulNBits ${e.args.input_type_shape[0].float?.at(-1) ?? e.args.input_type_shape[0].float16?.at(-1)}→${Object.values(e.args.output_type_shape[0])[0].at(-1)}`;
  return op;
};
const m = new Map();
for (const e of nodes) { const k = group(e); const o = m.get(k) ?? { n: 0, t: 0 }; o.n++; o.t += e.dur; m.set(k, o); }
const kernelUs = nodes.reduce((s, e) => s + e.dur, 0);
const out = {
  engine: dir, threads, decode_steps: n, prompt_tokens: P,
  wall_ms_per_step_unprofiled_median: r3(med(wallPlain)),
  wall_ms_per_step_median: r3(med(wall)),
  run_ms_per_step_median: r3(med(runs.map((r) => r.dur)) / 1000),
  kernel_ms_per_step: r3(kernelUs / n / 1000),
  argmax_ms: r3(argmaxMs),
  nodes_per_step: r3(nodes.length / n),
  ops: [...m.entries()].sort((a, b) => b[1].t - a[1].t).map(([k, o]) => ({ op: k, per_step: r3(o.n / n), ms_per_step: r3(o.t / n / 1000), share: r3(o.t / kernelUs) })),
};
process.stdout.write(`${JSON.stringify(out)}\n`);
