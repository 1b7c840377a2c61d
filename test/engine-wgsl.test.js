// --kernels wgsl: the hand-written WGSL decoder (src/engine/wgsl/) on Dawn's Node binding. CI has no GPU:
// it runs on Mesa 25's lavapipe (a Vulkan device on the CPU), where these tests check the kernels' math
// against the CPU engine and transformers; speed is measured on the GPU machine (scripts/gpu/run.sh wgsl).
// Where Dawn finds no adapter at all the tests skip with the reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { MODEL, REF, relL2, tprun, jsonLines } from './helpers/engine.js';

const NEW = 8;
let dir;
let noAdapter;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-wgsl-'));
  try {
    const probe = "import('webgpu').then(async ({ create, globals }) => { Object.assign(globalThis, globals); const a = await create([]).requestAdapter(); process.stdout.write(a ? 'ok' : 'none'); process.exit(0); })";
    noAdapter = execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) === 'ok' ? null : 'Dawn finds no WebGPU adapter';
  } catch (e) {
    noAdapter = `Dawn does not start here (${String(e.message).split('\n')[0]})`;
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function build(name, args) {
  const out = join(dir, name);
  const r = await tprun(['build', '--model', MODEL, ...args, '--out', out, '--max-seq-len', '128', '--max-input-len', '64']);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

function generateArgs(engine, prompts, extra) {
  const args = ['generate', '--engine', engine, '--max-new-tokens', String(NEW), '--json', '--logits', '--ignore-eos', ...extra];
  for (const p of prompts) args.push('--input-ids', p.input_ids.join(','));
  return args;
}

test('tp=1: greedy tokens equal the CPU engine\'s and transformers\'; logits close to transformers\' float32', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const engine = await build('fp16-tp1', ['--dtype', 'float16']);
  const [gpu, cpu] = [await tprun(generateArgs(engine, REF.prompts, ['--kernels', 'wgsl'])), await tprun(generateArgs(engine, REF.prompts, ['--device', 'cpu']))];
  assert.equal(gpu.code, 0, gpu.stderr);
  assert.equal(cpu.code, 0, cpu.stderr);
  const [g, c] = [jsonLines(gpu.stdout), jsonLines(cpu.stdout)];
  REF.prompts.forEach((p, b) => {
    assert.deepEqual(g[b].new_ids, c[b].new_ids, `prompt ${b}: WGSL and CPU engines disagree`);
    assert.deepEqual(g[b].new_ids, p.greedy_new_ids.slice(0, NEW), `prompt ${b}: not transformers' greedy tokens`);
    // Float16 weights (the bf16 checkpoint's values, exact in f16) with float32 accumulation, activations and
    // KV cache: 5.4e-5 seen on lavapipe, where the float16 ONNX engine (half activations) is at 3.2e-4 – 4.5e-4.
    const err = relL2(g[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 2e-4, `prompt ${b}: relative L2 error ${err} against transformers' float32 logits`);
    assert.ok(relL2(g[b].last_prompt_logits, c[b].last_prompt_logits) < 1e-3);
  });
  assert.equal(gpu.left.length, 0, 'no process left behind');
  // One prompt takes the pipelined greedy path (the token stays on the GPU, read back one step behind).
  const one = await tprun(['generate', '--engine', engine, '--kernels', 'wgsl', '--json', '--ignore-eos', '--max-new-tokens', '24', '--input-ids', REF.prompts[1].input_ids.join(',')]);
  assert.equal(one.code, 0, one.stderr);
  assert.deepEqual(jsonLines(one.stdout)[0].new_ids, REF.prompts[1].greedy_new_ids);
  // The other GEMV shapes (scripts/gpu/run.sh wgsl-variants compares their speed) give the same tokens:
  // the widest decode/prefill shapes, the tiled prefill GEMM and the shared-memory reduction, two prompts.
  for (const env of [{ TPRUN_WGSL_GEMV: 'r8,w64,u4', TPRUN_WGSL_PREFILL: 'tm16,r4' }, { TPRUN_WGSL_GEMV: 'r2,w256,u1', TPRUN_WGSL_PREFILL: 'tiled', TPRUN_WGSL_SUBGROUPS: '0' }]) {
    const v = await tprun(generateArgs(engine, REF.prompts.slice(0, 2), ['--kernels', 'wgsl']), { env });
    assert.equal(v.code, 0, v.stderr);
    jsonLines(v.stdout).forEach((o, b) => assert.deepEqual(o.new_ids, REF.prompts[b].greedy_new_ids.slice(0, NEW), `${JSON.stringify(env)} prompt ${b}`));
  }
  const bad = await tprun(['generate', '--engine', engine, '--kernels', 'wgsl', '--input-ids', '0,1,2'], { env: { TPRUN_WGSL_GEMV: 'r3' } });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /TPRUN_WGSL_GEMV=r3: 'r3' is not one of r2\|r4\|r8/);
  assert.equal(bad.stdout, '');
});

test('tp=2 (host all-reduce between the ranks\' command buffers): transformers\' greedy tokens', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const engine = await build('fp16-tp2', ['--dtype', 'float16', '--tp', '2']);
  const prompts = REF.prompts.slice(0, 2);
  const r = await tprun(generateArgs(engine, prompts, ['--kernels', 'wgsl']));
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  prompts.forEach((p, b) => {
    assert.deepEqual(out[b].new_ids, p.greedy_new_ids.slice(0, NEW), `prompt ${b}`);
    const err = relL2(out[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 2e-4, `prompt ${b}: relative L2 error ${err}`);
  });
  assert.equal(r.left.length, 0, 'no process left behind');
});

test('an engine the WGSL kernels cannot run is refused in one line naming the engine, exit 2', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const engine = await build('fp32-tp1', ['--dtype', 'float32']);
  const r = await tprun(['generate', '--engine', engine, '--input-ids', '0,1,2', '--kernels', 'wgsl']);
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('tprun:'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /fp32-tp1: a float32 engine; --kernels wgsl runs float16 engines \(build with --dtype float16/);
  assert.equal(r.stdout, '', 'no partial output');
  const c = await tprun(['generate', '--engine', engine, '--input-ids', '0,1,2', '--kernels', 'wgsl', '--device', 'cpu']);
  assert.notEqual(c.code, 0);
  assert.match(c.stderr, /--kernels wgsl runs on the GPU: drop --device cpu/);
});

test('no adapter: --kernels wgsl refuses in one line, exit 2, nothing on stdout', async () => {
  const engine = join(dir, 'fp16-noadapter');
  const b = await tprun(['build', '--model', MODEL, '--dtype', 'float16', '--out', engine, '--max-seq-len', '64', '--max-input-len', '32']);
  assert.equal(b.code, 0, b.stderr);
  const r = await tprun(['generate', '--engine', engine, '--input-ids', '0,1,2', '--kernels', 'wgsl'], { env: { VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' } });
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('tprun:'));
  assert.deepEqual(lines, ['tprun: rank 0: --kernels wgsl but Dawn finds no WebGPU adapter (no Vulkan device with VK_DRIVER_FILES=/nonexistent/icd.json)']);
  assert.equal(r.stdout, '');
  assert.equal(r.left.length, 0);
});
