// Float linears by the device an engine is built for (src/engine/linear.ts): for the CPU, the checkpoint's
// [N, K] weight as FusedMatMul's transposed operand (converted as it streams, never transposed at build);
// for the GPU, a MatMul against [K, N] (onnxruntime's WebGPU provider has no FusedMatMul). onnxruntime's CPU
// GEMM packs B the same way from either, so the two engines' logits must agree to the bit; and the WGSL
// kernels read either layout into the same GPU rows.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, readFileSync, mkdirSync, symlinkSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { MODEL, REF, tprun, jsonLines } from './helpers/engine.js';
import { engineGraph } from '../dist/engine/engine-weights.js';

const LONG = { timeoutMs: 600_000 };
const LINEARS = /^transformer\.layers\.\d+\.(attention\.(qkv|dense)|mlp\.(fc|gate|proj))\.weight$|^lm_head\.weight$/;
let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-layout-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

async function build(name, args, model = MODEL) {
  const out = join(dir, name);
  const r = await tprun(['build', '--model', model, ...args, '--out', out, '--max-seq-len', '128', '--max-input-len', '64'], LONG);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

function rankGraph(engine, rank) {
  const d = join(engine, `rank${rank}`);
  return engineGraph(readdirSync(d).filter((f) => f.endsWith('.onnx')).sort().map((f) => join(d, f)));
}

async function generate(engine, extra) {
  const args = ['generate', '--engine', engine, '--max-new-tokens', '6', '--json', '--logits', '--ignore-eos', ...extra];
  for (const p of REF.prompts) args.push('--input-ids', p.input_ids.join(','));
  const r = await tprun(args, LONG);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.left.length, 0, 'no process left behind');
  return jsonLines(r.stdout);
}

for (const [dtype, tp] of [['float32', 1], ['float16', 2]]) {
  test(`${dtype} tp=${tp}: the CPU engine's [N, K] FusedMatMul linears give the GPU engine's MatMul logits to the bit on the CPU`, async () => {
    const cpu = await build(`${dtype}-${tp}-cpu`, ['--dtype', dtype, '--tp', String(tp)]);
    const gpu = await build(`${dtype}-${tp}-gpu`, ['--dtype', dtype, '--tp', String(tp), '--device', 'gpu']);
    const layers = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')).num_hidden_layers;
    for (let r = 0; r < Number(tp); r++) {
      const [c, g] = [rankGraph(cpu, r), rankGraph(gpu, r)];
      const fused = c.nodes.filter((n) => n.op === 'FusedMatMul');
      assert.ok(fused.length >= 5 * layers, `rank ${r}: ${fused.length} FusedMatMul nodes`);
      assert.equal(c.nodes.filter((n) => n.op === 'MatMul').length, 0, `rank ${r}: a float MatMul left in the CPU engine`);
      assert.equal(g.nodes.filter((n) => n.op === 'FusedMatMul').length, 0, `rank ${r}: FusedMatMul in the GPU engine`);
      for (const n of fused) {
        assert.equal(n.attrs.transB, 1, `${n.inputs[1]}: transB`);
        assert.match(n.inputs[1], LINEARS);
        const [cd, gd] = [c.tensors.get(n.inputs[1])?.dims, g.tensors.get(n.inputs[1])?.dims];
        assert.ok(cd && gd, `${n.inputs[1]}: in both engines`);
        assert.deepEqual(cd, [gd[1], gd[0]], `${n.inputs[1]}: [N, K] in the CPU engine, [K, N] in the GPU one`);
      }
    }
    const [a, b] = [await generate(cpu, ['--device', 'cpu']), await generate(gpu, ['--device', 'cpu'])];
    REF.prompts.forEach((_, i) => {
      assert.deepEqual(a[i].new_ids, b[i].new_ids, `prompt ${i}: tokens`);
      assert.ok(a[i].last_prompt_logits.length > 0);
      assert.deepEqual(a[i].last_prompt_logits, b[i].last_prompt_logits, `prompt ${i}: logits differ between the layouts`);
    });
  });
}

test('the WGSL kernels read both layouts into the same rows: identical tokens and logits', async (t) => {
  const probe = "import('webgpu').then(async ({ create, globals }) => { Object.assign(globalThis, globals); const a = await create([]).requestAdapter(); process.stdout.write(a ? 'ok' : 'none'); process.exit(0); })";
  let adapter = false;
  try { adapter = execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) === 'ok'; } catch { /* no Dawn */ }
  if (!adapter) return t.skip('Dawn finds no WebGPU adapter');
  const cpu = await build('wgsl-cpu', ['--dtype', 'float16']);
  const gpu = await build('wgsl-gpu', ['--dtype', 'float16', '--device', 'gpu']);
  const [a, b] = [await generate(cpu, ['--kernels', 'wgsl']), await generate(gpu, ['--kernels', 'wgsl'])];
  REF.prompts.forEach((_, i) => {
    assert.deepEqual(a[i].new_ids, b[i].new_ids, `prompt ${i}: tokens`);
    assert.deepEqual(a[i].last_prompt_logits, b[i].last_prompt_logits, `prompt ${i}: logits`);
  });
  // onnxruntime's WebGPU provider has no FusedMatMul: a CPU-built engine there says its linears stay on the CPU, once.
  const layers = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')).num_hidden_layers;
  const ort = async (e) => {
    const r = await tprun(['generate', '--engine', e, '--device', 'gpu', '--kernels', 'ort', '--max-new-tokens', '1', '--input-ids', REF.prompts[0].input_ids.join(',')], LONG);
    assert.equal(r.code, 0, r.stderr);
    return r.stderr;
  };
  const note = (await ort(cpu)).split('\n').filter((l) => l.includes('was built for the CPU'));
  assert.equal(note.length, 1, 'one note');
  assert.match(note[0], new RegExp(`its ${5 * layers + 1} float linears \\(FusedMatMul\\) run on onnxruntime's CPU provider under WebGPU; rebuild it with --device gpu`));
  assert.doesNotMatch(await ort(gpu), /built for the CPU/);
});

test('tied embeddings: a CPU engine stores the [V, H] table once for the gather and the lm_head, with the logits of one that stores it twice', async () => {
  // brown-llama-a with tie_word_embeddings: its lm_head is read from the embedding table.
  const tied = join(dir, 'tied-model');
  mkdirSync(tied);
  for (const f of readdirSync(MODEL)) if (f !== 'config.json') symlinkSync(join(MODEL, f), join(tied, f));
  const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8'));
  writeFileSync(join(tied, 'config.json'), JSON.stringify({ ...cfg, tie_word_embeddings: true }));
  const tableBytes = cfg.vocab_size * cfg.hidden_size * 2;
  /** @type {{ tp: number, extra: string[], shared: boolean }[]} */
  const cases = [{ tp: 1, extra: [], shared: true }, { tp: 2, extra: ['--parallel-embedding'], shared: true }, { tp: 2, extra: [], shared: false }];
  for (const { tp, extra, shared } of cases) {
    const cpu = await build(`tied-cpu-${tp}${extra.join('')}`, ['--dtype', 'float16', '--tp', String(tp), ...extra], tied);
    const gpu = await build(`tied-gpu-${tp}${extra.join('')}`, ['--dtype', 'float16', '--tp', String(tp), ...extra, '--device', 'gpu'], tied);
    for (let r = 0; r < tp; r++) {
      const ext = (g, n) => { const t = g.tensors.get(n); assert.ok(t?.external, `${n}: in the weight file`); return t.external; };
      const g = rankGraph(cpu, r);
      const [emb, head] = [ext(g, 'transformer.vocab_embedding.weight'), ext(g, 'lm_head.weight')];
      if (shared) assert.deepEqual(head, emb, `rank ${r}: the lm_head is the embedding's bytes`);
      else assert.notEqual(head.offset, emb.offset, `rank ${r}: a replicated table and a vocab-parallel lm_head differ`);
      // The GPU engine stores the lm_head transposed, apart: this one is smaller by one slot exactly where shared.
      const size = (e) => statSync(join(e, `rank${r}`, 'weights.bin')).size;
      if (shared) assert.ok(size(gpu) - size(cpu) >= tableBytes / tp, `rank ${r}: ${size(gpu)} vs ${size(cpu)} bytes`);
    }
    const [a, b] = [await generate(cpu, ['--device', 'cpu']), await generate(gpu, ['--device', 'cpu'])];
    REF.prompts.forEach((_, i) => {
      assert.deepEqual(a[i].new_ids, b[i].new_ids, `tp ${tp}${extra}: prompt ${i}: tokens`);
      assert.deepEqual(a[i].last_prompt_logits, b[i].last_prompt_logits, `tp ${tp}${extra}: prompt ${i}: logits`);
    });
  }
});
