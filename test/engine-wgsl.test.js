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
/** A hang guard for one generate on a loaded 2-core machine (no timing is asserted). */
const LONG = { timeoutMs: 600_000 };
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
  // int4_awq's calibration and scale search take minutes on a loaded 2-core machine: a hang guard only.
  const r = await tprun(['build', '--model', MODEL, ...args, '--out', out, '--max-seq-len', '128', '--max-input-len', '64'], { timeoutMs: 900_000 });
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
  const [gpu, cpu] = [await tprun(generateArgs(engine, REF.prompts, ['--kernels', 'wgsl']), LONG), await tprun(generateArgs(engine, REF.prompts, ['--device', 'cpu']), LONG)];
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
  const one = await tprun(['generate', '--engine', engine, '--kernels', 'wgsl', '--json', '--ignore-eos', '--max-new-tokens', '24', '--input-ids', REF.prompts[1].input_ids.join(',')], LONG);
  assert.equal(one.code, 0, one.stderr);
  assert.deepEqual(jsonLines(one.stdout)[0].new_ids, REF.prompts[1].greedy_new_ids);
  // The other GEMV shapes (scripts/gpu/run.sh wgsl-variants compares their speed) give the same tokens:
  // the widest decode/prefill shapes, the tiled prefill GEMM and the shared-memory reduction, two prompts.
  // Also: attention split over 3 position ranges at decode (flash-decoding; these short contexts would not
  // split by default), and the old forms of the norm (its own dispatch) and of the KV cache (float32).
  for (const env of [{ TPRUN_WGSL_GEMV: 'r8,w64,u4', TPRUN_WGSL_PREFILL: 'tm16,r4', TPRUN_WGSL_ATTN_SPLIT: '3' }, { TPRUN_WGSL_GEMV: 'r2,w256,u1', TPRUN_WGSL_PREFILL: 'tiled', TPRUN_WGSL_SUBGROUPS: '0', TPRUN_WGSL_FUSE_NORM: '0', TPRUN_WGSL_KV: 'float32' }]) {
    const v = await tprun(generateArgs(engine, REF.prompts.slice(0, 2), ['--kernels', 'wgsl']), { env, ...LONG });
    assert.equal(v.code, 0, v.stderr);
    jsonLines(v.stdout).forEach((o, b) => assert.deepEqual(o.new_ids, REF.prompts[b].greedy_new_ids.slice(0, NEW), `${JSON.stringify(env)} prompt ${b}`));
  }
  const refused = [
    { env: { TPRUN_WGSL_GEMV: 'r3' }, msg: /TPRUN_WGSL_GEMV=r3: 'r3' is not one of r2\|r4\|r8/ },
    { env: { TPRUN_WGSL_FUSE_NORM: 'off' }, msg: /TPRUN_WGSL_FUSE_NORM=off: not 0 \(off\) or 1 \(on\)/ },
  ];
  for (const { env, msg } of refused) {
    const bad = await tprun(['generate', '--engine', engine, '--kernels', 'wgsl', '--input-ids', '0,1,2'], { env });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, msg);
    // Dawn itself prints its limit warnings on lavapipe; tprun's own say is one line.
    assert.equal(bad.stderr.trim().split('\n').filter((l) => l && !l.startsWith('Warning: ')).length, 1, bad.stderr);
    assert.equal(bad.stdout, '');
  }
});

test('tp=2 (host all-reduce between the ranks\' command buffers): transformers\' greedy tokens; recording past an all-reduce point before its sums are back changes no bit (TPRUN_WGSL_REDUCE_AHEAD=0 waits first)', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const engine = await build('fp16-tp2', ['--dtype', 'float16', '--tp', '2']);
  const prompts = REF.prompts.slice(0, 2);
  const r = await tprun(generateArgs(engine, prompts, ['--kernels', 'wgsl']), LONG);
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  prompts.forEach((p, b) => {
    assert.deepEqual(out[b].new_ids, p.greedy_new_ids.slice(0, NEW), `prompt ${b}`);
    const err = relL2(out[b].last_prompt_logits, p.last_logits);
    assert.ok(err < 2e-4, `prompt ${b}: relative L2 error ${err}`);
  });
  assert.equal(r.left.length, 0, 'no process left behind');
  // Waiting first; and a prompt's command buffers of 4 dispatches, so that buffers are submitted between two
  // all-reduce points while a reduce's sums are still on their way back (the sums must be written first).
  for (const env of [{ TPRUN_WGSL_REDUCE_AHEAD: '0' }, { TPRUN_WGSL_SUBMIT: '4' }]) {
    const other = await tprun(generateArgs(engine, prompts, ['--kernels', 'wgsl']), { ...LONG, env });
    assert.equal(other.code, 0, other.stderr);
    jsonLines(other.stdout).forEach((o, b) => {
      assert.deepEqual(o.new_ids, out[b].new_ids, `${JSON.stringify(env)}, prompt ${b}: greedy tokens`);
      assert.deepEqual(o.last_prompt_logits, out[b].last_prompt_logits, `${JSON.stringify(env)}, prompt ${b}: logits`);
    });
  }
  const bad = await tprun(generateArgs(engine, prompts.slice(0, 1), ['--kernels', 'wgsl']), { env: { TPRUN_WGSL_REDUCE_AHEAD: 'yes' } });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /TPRUN_WGSL_REDUCE_AHEAD=yes: not 0 \(off\) or 1 \(on\)/);
  assert.equal(bad.stdout, '');
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

// MatMulNBits engines (int4 weight-only, int4_awq with its prequant factor, int8 weight-only): the WGSL
// kernels read the very blocks, scales and factors onnxruntime's MatMulNBits reads. Built with
// --int4-accuracy-level 0 so that the CPU engine computes in float too (level 4 rounds activations to int8
// blocks, a different computation). The same engine's greedy tokens must be equal, and its last-prompt
// logits within 1e-3 rel. L2: both multiply the same dequantized weights; what differs is the float16
// engine's half activations between ops on the CPU against float32 ones in WGSL (the float16 engine above
// differs from the CPU by 3e-4 – 4.5e-4 for that reason alone; int4_wo here: 2.8e-4 – 4e-4 on lavapipe).
test('int4 / int8 MatMulNBits engines at tp 1 and tp 2: greedy tokens equal the CPU engine\'s, logits within 1e-3', { timeout: 1_800_000 }, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const prompts = REF.prompts.slice(0, 2);
  const cases = [
    ['int4_wo', ['--quant', 'int4_wo']],
    ['int4_wo-tp2', ['--quant', 'int4_wo', '--tp', '2']],
    ['int4_awq', ['--quant', 'int4_awq']],
    ['int8_wo', ['--quant', 'int8_wo']],
  ];
  for (const [name, args] of cases) {
    const engine = await build(name, ['--dtype', 'float16', '--int4-accuracy-level', '0', ...args]);
    const [gpu, cpu] = [await tprun(generateArgs(engine, prompts, ['--kernels', 'wgsl']), LONG), await tprun(generateArgs(engine, prompts, ['--device', 'cpu']), LONG)];
    assert.equal(gpu.code, 0, gpu.stderr);
    assert.equal(cpu.code, 0, cpu.stderr);
    const [g, c] = [jsonLines(gpu.stdout), jsonLines(cpu.stdout)];
    prompts.forEach((p, b) => {
      assert.deepEqual(g[b].new_ids, c[b].new_ids, `${name} prompt ${b}: WGSL and CPU engines disagree`);
      const err = relL2(g[b].last_prompt_logits, c[b].last_prompt_logits);
      assert.ok(err < 1e-3, `${name} prompt ${b}: relative L2 ${err} from the CPU engine's logits`);
    });
    assert.equal(g[0].ranks[0].kernels, 'wgsl');
    assert.equal(gpu.left.length, 0, 'no process left behind');
  }
});

// --kernels auto (the default): WGSL where it runs the engine on a GPU device, onnxruntime otherwise; the
// per-rank figures (--json ranks[], and the stderr line) say which ran, and the WGSL KV cache's dtype.
test('--kernels auto picks WGSL for float16 / int4 engines on the GPU and onnxruntime otherwise; float16 KV cache', { timeout: 1_800_000 }, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const fp16 = await build('auto-fp16', ['--dtype', 'float16']);
  const int4 = await build('auto-int4', ['--dtype', 'float16', '--quant', 'int4_wo']);
  const fp32 = await build('auto-fp32', ['--dtype', 'float32']);
  const pp2 = await build('auto-pp2', ['--dtype', 'float16', '--pp', '2']);
  const ids = REF.prompts[0].input_ids;
  const run = async (engine, extra, env) => {
    const r = await tprun(['generate', '--engine', engine, '--max-new-tokens', '2', '--json', '--ignore-eos', '--input-ids', ids.join(','), ...extra], { ...LONG, ...(env ? { env } : {}) });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.left.length, 0, 'no process left behind');
    return jsonLines(r.stdout)[0].ranks;
  };
  const kernels = async (engine, extra) => (await run(engine, extra)).map((r) => r.kernels).join('/');
  assert.equal(await kernels(fp16, ['--device', 'gpu']), 'wgsl');
  assert.equal(await kernels(int4, ['--device', 'gpu']), 'wgsl');
  assert.equal(await kernels(fp16, []), 'ort', 'an engine built for the CPU stays there without --device');
  assert.equal(await kernels(fp16, ['--device', 'cpu']), 'ort');
  assert.equal(await kernels(fp32, ['--device', 'gpu']), 'ort', 'float32 engines run on onnxruntime');
  assert.equal(await kernels(pp2, ['--device', 'gpu']), 'wgsl/wgsl', 'pp > 1 runs on the WGSL kernels too (engine-wgsl-pp.test.js)');
  // The KV cache: 6 layers × K, V × 4 KV heads × (prompt + 2 new) positions × head 32, float16 unless asked otherwise.
  const elems = 6 * 2 * 4 * (ids.length + 2) * 32;
  const [h] = await run(fp16, ['--kernels', 'wgsl']);
  assert.equal(h.kv_cache_dtype, 'float16');
  assert.deepEqual(h.kv_cache_bytes, { host: 0, gpu: elems * 2 });
  const [f] = await run(fp16, ['--kernels', 'wgsl'], { TPRUN_WGSL_KV: 'float32' });
  assert.equal(f.kv_cache_dtype, 'float32');
  assert.deepEqual(f.kv_cache_bytes, { host: 0, gpu: elems * 4 });
  // Without --json the figures line says it.
  const line = await tprun(['generate', '--engine', fp16, '--device', 'gpu', '--max-new-tokens', '2', '--input-ids', ids.join(',')], LONG);
  assert.equal(line.code, 0, line.stderr);
  assert.match(line.stderr, /· kernels wgsl · KV float16/);
});
