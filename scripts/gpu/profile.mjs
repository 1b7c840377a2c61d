// Where a decode step's time goes on onnxruntime's WebGPU provider: the wall time of a step, the
// session's run time, the CPU time ORT spends recording each kernel (profiler 'Node' events), and the
// GPU time of each shader dispatch (profiler 'Api' events, from WebGPU timestamp queries, in µs like
// the other events: on the H200 the lm_head MatMul (131 MB) shows 88, i.e. 1.5 TB/s).
// The prompt is prefilled by an unprofiled session; a second, profiled session of the same engine runs
// only decode steps on the same GPU KV cache, so the profile holds decode steps alone.
// Usage: node scripts/gpu/profile.mjs ENGINE LABEL [STEPS] [PROMPT_LEN]   (prints one JSON line)
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import { Engine } from '../../dist/engine/engine.js';
import { EngineRunner } from '../../dist/engine/runtime.js';
import { initWorld } from '../../dist/index.js';

const [dir, label, stepsArg, promptArg] = process.argv.slice(2);
const steps = Number(stepsArg ?? 32);
const P = Number(promptArg ?? 128);
const world = await initWorld(); // started alone: a world of one (tp 1, the runner never communicates)
const engine = await Engine.fromDir(dir, 0, { worldSize: 1, verify: false });
const prof = mkdtempSync(join(tmpdir(), 'tprun-prof-'));
const plain = await EngineRunner.load(engine, world, { device: 'gpu' });
const profiled = await EngineRunner.load(engine, world, { device: 'gpu', sessionOptions: { enableProfiling: true, profileFilePrefix: join(prof, 'p') } });
const V = plain.vocabSize;
const prompt = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % V);
const cache = plain.newCache(1, P + steps + 1);
let logits = await plain.forward({ batch: 1, seq: P, ids: prompt, seqlensK: Int32Array.of(P - 1), totalSeq: P, positions: [P - 1], npos: 1 }, cache);
const argmax = (a) => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };
const wall = [];
for (let s = 0; s < steps; s++) {
  const t0 = performance.now();
  logits = await profiled.forward({ batch: 1, seq: 1, ids: [argmax(logits)], seqlensK: Int32Array.of(P + s), totalSeq: P + s + 1, positions: [0], npos: 1 }, cache);
  wall.push(performance.now() - t0);
}
cache.dispose();
await profiled.close(); // writes the profile
await plain.close();
await world.close();
const file = readdirSync(prof).find((f) => f.endsWith('.json'));
const ev = JSON.parse(readFileSync(join(prof, file), 'utf8'));
if (process.env.OUT) writeFileSync(join(process.env.OUT, `profile-${label.replace(/[^a-z0-9-]+/gi, '_')}.json.gz`), gzipSync(JSON.stringify(ev)));
rmSync(prof, { recursive: true, force: true });

const runs = ev.filter((e) => e.name === 'model_run');
const nodes = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
const api = ev.filter((e) => e.cat === 'Api');
const n = runs.length;
const byKey = (xs, key, val) => {
  const m = new Map();
  for (const x of xs) { const k = key(x); const o = m.get(k) ?? { n: 0, t: 0 }; o.n++; o.t += val(x); m.set(k, o); }
  return [...m.entries()].sort((a, b) => b[1].t - a[1].t);
};
const r3 = (x) => Math.round(x * 1000) / 1000;
const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const gpuUs = api.reduce((s, e) => s + e.dur, 0);
const out = {
  profile: label, engine: dir, decode_steps: n, prompt_tokens: P,
  wall_ms_per_step_median: r3(med(wall)),
  run_ms_per_step_median: r3(med(runs.map((r) => r.dur)) / 1000),
  // CPU time inside ORT's kernels (WebGPU: building and recording the dispatch; CPU provider: the compute).
  cpu_kernel_ms_per_step: r3(nodes.reduce((s, e) => s + e.dur, 0) / n / 1000),
  nodes_per_step: r3(nodes.length / n),
  cpu_provider_nodes_per_step: r3(nodes.filter((e) => e.args?.provider === 'CPUExecutionProvider').length / n),
  gpu_dispatches_per_step: r3(api.length / n),
  gpu_ms_per_step: r3(gpuUs / n / 1000),
  gpu_programs: byKey(api, (e) => e.name.split('&').pop(), (e) => e.dur).slice(0, 12)
    .map(([k, o]) => ({ program: k, per_step: r3(o.n / n), ms_per_step: r3(o.t / n / 1000) })),
  cpu_ops: byKey(nodes, (e) => `${e.args?.op_name}@${e.args?.provider === 'CPUExecutionProvider' ? 'cpu' : 'gpu'}`, (e) => e.dur).slice(0, 12)
    .map(([k, o]) => ({ op: k, per_step: r3(o.n / n), ms_per_step: r3(o.t / n / 1000) })),
  // The biggest GPU dispatches with their shapes (the weight-reading MatMuls show their bandwidth here).
  gpu_top_shapes: byKey(api, (e) => `${e.name.split('&').pop()} ${e.args?.shapes ?? ''}`, (e) => e.dur).slice(0, 8)
    .map(([k, o]) => ({ what: k, per_step: r3(o.n / n), us_each: r3(o.t / o.n) })),
};
process.stdout.write(`${JSON.stringify(out)}\n`);
