// --kernels wgsl prefill kernels (src/engine/wgsl/kernels/gemm.ts, TPRUN_WGSL_PREFILL). CI runs Mesa's
// lavapipe, which has no subgroup matrices: there the sgmat knobs must be refused (asked by name) or fall
// back (auto), and the subgroup-matrix shaders are compiled by Tint on Dawn's null backend (it validates
// WGSL and builds pipelines without running them). Whether they compute the right numbers is checked on
// the GPU by scripts/gpu/sgmat-check.mjs (run.sh sgmat); where the adapter here has them, the model check
// below runs them too.
import { must } from './helpers/must.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { MODEL, REF, relL2, tprun, jsonLines } from './helpers/engine.js';

const NEW = 8;
let dir;
let engine;
/** null, or why the tests that need an adapter skip; and whether the adapter has subgroup matrices. */
let noAdapter;
let hasSgmat = false;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-wgsl-prefill-'));
  try {
    const probe = `import('webgpu').then(async ({ create, globals }) => { Object.assign(globalThis, globals);
      const g = create(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia']); globalThis.keep = g;
      const a = await g.requestAdapter();
      process.stdout.write(!a ? 'none' : a.features.has('chromium-experimental-subgroup-matrix') ? 'sgmat' : 'ok'); process.exit(0); })`;
    const r = execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    noAdapter = r === 'none' ? 'Dawn finds no WebGPU adapter' : null;
    hasSgmat = r === 'sgmat';
  } catch (e) {
    noAdapter = `Dawn does not start here (${String(e.message).split('\n')[0]})`;
  }
  if (noAdapter) return;
  engine = join(dir, 'fp16');
  const b = await tprun(['build', '--model', MODEL, '--dtype', 'float16', '--out', engine, '--max-seq-len', '128', '--max-input-len', '64']);
  assert.equal(b.code, 0, b.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function generateArgs(prompts) {
  const args = ['generate', '--engine', engine, '--kernels', 'wgsl', '--max-new-tokens', String(NEW), '--json', '--logits', '--ignore-eos'];
  for (const p of prompts) args.push('--input-ids', p.input_ids.join(','));
  return args;
}

test('TPRUN_WGSL_PREFILL=sgmat|sgmat2: refused in one line where the adapter has no subgroup matrices; auto falls back to the tiled GEMM', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const prompts = REF.prompts.slice(0, 2);
  const tiled = await tprun(generateArgs(prompts), { env: { TPRUN_WGSL_PREFILL: 'tiled' }, timeoutMs: 300000 });
  assert.equal(tiled.code, 0, tiled.stderr);
  const base = jsonLines(tiled.stdout);
  const auto = await tprun(generateArgs(prompts), { env: { TPRUN_WGSL_PREFILL: 'auto' }, timeoutMs: 300000 });
  assert.equal(auto.code, 0, auto.stderr);
  jsonLines(auto.stdout).forEach((o, b) => {
    assert.deepEqual(o.new_ids, prompts[b].greedy_new_ids.slice(0, NEW), `auto, prompt ${b}: not transformers' greedy tokens`);
    // Without subgroup matrices auto is the tiled kernel on the same device: the same numbers, not close ones
    // (the Dawn toggles it turns on must not change the kernels the device runs).
    if (!hasSgmat) assert.deepEqual(o.last_prompt_logits, base[b].last_prompt_logits, `auto, prompt ${b}: logits differ from tiled`);
  });
  for (const knob of ['sgmat', 'sgmat2']) {
    const r = await tprun(generateArgs(prompts), { env: { TPRUN_WGSL_PREFILL: knob }, timeoutMs: 300000 });
    if (hasSgmat) {
      // A GPU with subgroup matrices (sgmat rounds activations to f16: close to, not equal to, tiled).
      assert.equal(r.code, 0, r.stderr);
      jsonLines(r.stdout).forEach((o, b) => {
        assert.deepEqual(o.new_ids, prompts[b].greedy_new_ids.slice(0, NEW), `${knob}, prompt ${b}`);
        assert.ok(relL2(o.last_prompt_logits, base[b].last_prompt_logits) < 5e-3, `${knob}, prompt ${b}: logits far from tiled`);
      });
      continue;
    }
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('tprun:'));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], new RegExp(`^tprun: rank 0: TPRUN_WGSL_PREFILL=${knob}: .* has no subgroup matrices \\(Dawn's 'chromium-experimental-subgroup-matrix' feature\\); use tiled, or auto to fall back$`));
    assert.equal(r.stdout, '', 'no partial output');
    assert.equal(r.left.length, 0, 'no process left behind');
  }
  const bad = await tprun(generateArgs(prompts.slice(0, 1)), { env: { TPRUN_WGSL_PREFILL: 'sgmat,tm8' } });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /TPRUN_WGSL_PREFILL=sgmat,tm8: 'sgmat' is not one of .*, or one of tiled\|tiled-t16\|tiled-n32\|tiled-t16-n32\|sgmat\|sgmat2\|sgmat-n32\|sgmat2-n32\|sgmat-ws\[-tT\]\[-nN\]\[-kK\]\[-sS\]\[-zZ\]\[-b2\]\|auto alone/);
});

test("the subgroup-matrix GEMM compiles (Tint on Dawn's null backend) for every f16 -> f32 shape the H200 lists and every epilogue", async (t) => {
  const { sgmatShader } = await import('../dist/engine/wgsl/kernels/gemm.js');
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
  const adapter = await gpu.requestAdapter({ featureLevel: 'core' });
  const want = /** @type {GPUFeatureName[]} */ (['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix']);
  if (!adapter || !want.every((f) => adapter.features.has(f))) return t.skip("Dawn's null backend does not offer subgroup matrices here");
  const device = await adapter.requestDevice({ requiredFeatures: want });
  try {
    // What the H200 lists with vulkan_enable_f16_on_nvidia (scripts/gpu/subgroup-matrix.mjs), subgroup size 32;
    // and a 64-lane subgroup (AMD) for the epilogue's arithmetic.
    for (const c of [{ M: 16, N: 16, K: 16, sg: 32 }, { M: 16, N: 8, K: 16, sg: 32 }, { M: 16, N: 8, K: 8, sg: 32 }, { M: 16, N: 16, K: 16, sg: 64 }]) {
      for (const ep of /** @type {const} */ (['store', 'add', 'swiglu'])) {
        for (const [split, rows] of /** @type {[boolean, number][]} */ ([[false, 64], [true, 64], [false, 32]])) {
          const what = `${c.M}x${c.N}x${c.K} sg${c.sg} ${ep}${split ? ' split' : ''} ${rows} rows`;
          device.pushErrorScope('validation');
          const module = device.createShaderModule({ code: sgmatShader(ep, c, split, rows) });
          const msgs = (await module.getCompilationInfo()).messages.filter((m) => m.type !== 'info');
          assert.deepEqual(msgs.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`), [], `${what}: Tint's errors and warnings`);
          device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
          const err = await device.popErrorScope();
          assert.equal(err, null, `${what}: ${err?.message}`);
        }
      }
    }
  } finally {
    device.destroy();
    globalThis.keepDawn = gpu; // the instance outlives its device (gpu.ts)
  }
});

test("the staged subgroup-matrix GEMM (sgmat-ws) compiles (Tint on Dawn's null backend) for the tiles run.sh sgmat times, every epilogue, the H200's f16 shapes and every weight format (float16; int4 / int8 with and without the prequant factor, both dequantizations)", async (t) => {
  const { sgmatWsShader, wsBytes } = await import('../dist/engine/wgsl/kernels/gemm.js');
  const { AUTO_WS } = await import('../dist/engine/wgsl/variants.js');
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
  const adapter = await gpu.requestAdapter({ featureLevel: 'core' });
  const want = /** @type {GPUFeatureName[]} */ (['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix']);
  if (!adapter || !want.every((f) => adapter.features.has(f))) return t.skip("Dawn's null backend does not offer subgroup matrices here");
  const limit = adapter.limits.maxComputeWorkgroupStorageSize;
  const device = await adapter.requestDevice({ requiredFeatures: want, requiredLimits: { maxComputeWorkgroupStorageSize: limit } });
  try {
    // [TT, TN, KC, S, SK, DB]: SK (split-K) changes the add epilogue only; DB: two staging buffers.
    const tiles = /** @type {[number, number, number, number, number, boolean?][]} */ ([[32, 64, 64, 4, 1], [32, 32, 64, 4, 1], [64, 32, 64, 4, 1], [32, 64, 32, 4, 2], [64, 64, 32, 8, 2], [16, 64, 128, 4, 4], [32, 32, 32, 4, 1, true], [64, 128, 32, 4, 1], [64, 64, 32, 4, 1], [128, 128, 32, 8, 4, true]]);
    const formats = /** @type {['f16' | 'q4' | 'q8', 'none' | 'scale', ('exp' | 'cvt')?][]} */ ([['f16', 'none'], ['q4', 'none'], ['q4', 'scale'], ['q8', 'none'], ['q8', 'scale'], ['q4', 'scale', 'cvt'], ['q8', 'none', 'cvt']]);
    let piped = 0;
    for (const c of [{ M: 16, N: 16, K: 16, sg: 32 }, { M: 16, N: 8, K: 16, sg: 32 }, { M: 16, N: 8, K: 8, sg: 32 }]) {
      for (const ep of /** @type {const} */ (['store', 'add', 'swiglu'])) {
        for (const [TT, TN, KC, S, SK, DB] of tiles) {
          for (const [fmt, prologue, unpack] of formats) {
            // Every tile for float16; the quantized formats on the 32-token tiles and on auto's own int4 / int8 tiles (the staging is what differs).
            const autoQ = Object.values(AUTO_WS.q).some((a) => a.TT === TT && a.TN === TN && a.KC === KC && a.S === S);
            if (fmt !== 'f16' && (c.N !== 16 || (TT !== 32 && !autoQ))) continue;
            const tile = { TT, TN, KC, S, SK, DB };
            const what = `${fmt} ${prologue} ${unpack ?? ''} ${c.M}x${c.N}x${c.K} ${ep} ${JSON.stringify(tile)}`;
            device.pushErrorScope('validation');
            const module = device.createShaderModule({ code: sgmatWsShader(ep, c, tile, fmt, prologue, unpack ?? 'exp') });
            const msgs = (await module.getCompilationInfo()).messages.filter((m) => m.type !== 'info');
            assert.deepEqual(msgs.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`), [], `${what}: Tint's errors and warnings`);
            // A pipeline where the null device's workgroup memory holds the tile (the H200's Vulkan limit is larger).
            if (wsBytes(tile, c, ep === 'swiglu' ? 2 : 1) <= limit) { device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } }); piped++; }
            const err = await device.popErrorScope();
            assert.equal(err, null, `${what}: ${err?.message}`);
          }
        }
      }
    }
    assert.ok(piped > 0, 'no tile fits the null device: nothing went through pipeline creation');
  } finally {
    device.destroy();
    globalThis.keepDawn = gpu;
  }
});

test('prefill kernel choice on a device with 16x16x16 subgroup matrices (a stub device: no kernel runs): int4 / int8 take sgmat-ws unless TPRUN_WGSL_PREFILL_Q=tiled, split-K sizes the add grid, AUTO_WS per format, a tile over the workgroup memory refused in one line', async () => {
  const { Pipelines } = await import('../dist/engine/wgsl/pipelines.js');
  const { NBITS_TILE } = await import('../dist/engine/wgsl/kernels/nbits.js');
  const { AUTO_WS } = await import('../dist/engine/wgsl/variants.js');
  globalThis.GPUShaderStage ??= /** @type {any} */ ({ COMPUTE: 4 });
  const made = [];
  const stub = (o) => { made.push(o?.label ?? ''); return {}; };
  const dev = /** @type {any} */ ({ limits: { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 49152 }, createBindGroupLayout: stub, createShaderModule: stub, createComputePipeline: stub, createPipelineLayout: stub });
  const c = { M: 16, N: 16, K: 16, sg: 32 };
  const saved = { ...process.env };
  const pipes = (env) => {
    for (const k of ['TPRUN_WGSL_PREFILL', 'TPRUN_WGSL_PREFILL_Q', 'TPRUN_WGSL_PREFILL_WS']) delete process.env[k];
    Object.assign(process.env, env);
    return new Pipelines(dev, true, true, c);
  };
  try {
    let pl = pipes({});
    // auto follows AUTO_WS's table: the float16 one for f16 weights, the quantized one for q4 / q8.
    const autoKernel = (/** @type {'f16' | 'q4' | 'q8'} */ fmt, /** @type {'store' | 'add' | 'swiglu'} */ ep, prologue = 'none') => {
      const t = AUTO_WS[fmt === 'f16' ? 'f16' : 'q'][ep];
      const sk = ep === 'add' ? t.SK ?? 1 : 1;
      return { tile: { tm: t.TT, rows: t.TN / sk }, label: `gemm.sgmat-ws.${fmt}.${ep}.${prologue}.t${t.TT}.n${t.TN}.k${t.KC}.s${t.S}.z${sk}` };
    };
    for (const fmt of /** @type {const} */ (['f16', 'q4', 'q8'])) {
      for (const ep of /** @type {const} */ (['store', 'add', 'swiglu'])) {
        made.length = 0;
        const k = pl.gemv(fmt, ep);
        const want = autoKernel(fmt, ep);
        assert.deepEqual(k.prefillTile, want.tile, `auto ${fmt} ${ep}`);
        assert.ok(made.some((l) => l.startsWith(want.label)), `auto ${fmt} ${ep}: ${made}`);
      }
    }
    made.length = 0;
    assert.deepEqual(pl.gemv('q4', 'add', 'scale').prefillTile, autoKernel('q4', 'add', 'scale').tile);
    assert.ok(made.some((l) => l === `${autoKernel('q4', 'add', 'scale').label}.exp`), String(made));
    pl = pipes({ TPRUN_WGSL_PREFILL_Q: 'tiled' });
    made.length = 0;
    assert.deepEqual(pl.gemv('q4', 'swiglu').prefillTile, NBITS_TILE);
    assert.deepEqual(pl.gemv('f16', 'swiglu').prefillTile, autoKernel('f16', 'swiglu').tile);
    assert.ok(made.includes('gemm.q4.swiglu.none') && made.some((l) => l.startsWith('gemm.sgmat-ws.f16.swiglu')), String(made));
    // Split-K: the add linears' grid has Z workgroups per 64-row tile; store and SwiGLU run whole.
    pl = pipes({ TPRUN_WGSL_PREFILL: 'sgmat-ws-t64-n64-k32-s8-z4' });
    assert.deepEqual(pl.gemv('f16', 'add').prefillTile, { tm: 64, rows: 16 });
    assert.deepEqual(pl.gemv('q8', 'add').prefillTile, { tm: 64, rows: 16 });
    assert.deepEqual(pl.gemv('f16', 'store').prefillTile, { tm: 64, rows: 64 });
    pl = pipes({ TPRUN_WGSL_PREFILL_WS: 'add=sgmat-ws-z2,q.swiglu=sgmat-ws-t64-n32-s8' });
    assert.deepEqual(pl.gemv('f16', 'add').prefillTile, { tm: 32, rows: 32 });
    assert.deepEqual(pl.gemv('q4', 'add').prefillTile, autoKernel('q4', 'add').tile);
    assert.deepEqual(pl.gemv('q4', 'swiglu').prefillTile, { tm: 64, rows: 32 });
    assert.deepEqual(pl.gemv('f16', 'swiglu').prefillTile, autoKernel('f16', 'swiglu').tile);
    // Two staging buffers of the default tile are 50,176 bytes with SwiGLU's two weight tiles.
    assert.throws(() => pipes({ TPRUN_WGSL_PREFILL: 'sgmat-ws-b2' }), (/** @type {any} */ e) => e.constructor.name === 'InputError' && /^TPRUN_WGSL_PREFILL=sgmat-ws-b2: the tile needs 50176 bytes of workgroup memory \(SwiGLU\), the device allows 49152$/.test(e.message));
    assert.throws(() => pipes({ TPRUN_WGSL_PREFILL_WS: 'add=sgmat-ws-b2,q.swiglu=sgmat-ws-b2' }), /TPRUN_WGSL_PREFILL_WS=add=sgmat-ws-b2,q.swiglu=sgmat-ws-b2: the tile needs 50176 bytes/);
    assert.deepEqual(pipes({ TPRUN_WGSL_PREFILL_WS: 'swiglu=sgmat-ws-k32-b2' }).gemv('f16', 'swiglu').prefillTile, { tm: 32, rows: 64 });
    // A device whose workgroup memory holds auto's float16 tiles but not its int4 ones (a table whose int4
    // gate/up tile has 128 rows: 29,696 bytes): float16 keeps the staged kernel, int4 alone prefills on its
    // tiled GEMM. (A tile named in TPRUN_WGSL_PREFILL_WS that does not fit is refused instead, above.)
    pipes({});
    const qSwiglu = AUTO_WS.q.swiglu;
    AUTO_WS.q.swiglu = { TT: 64, TN: 128, KC: 32, S: 4 };
    try {
      const small = new Pipelines({ ...dev, limits: { ...dev.limits, maxComputeWorkgroupStorageSize: 24576 } }, true, true, c);
      made.length = 0;
      assert.deepEqual(small.gemv('f16', 'swiglu').prefillTile, autoKernel('f16', 'swiglu').tile);
      assert.deepEqual(small.gemv('q4', 'swiglu').prefillTile, NBITS_TILE);
      assert.ok(made.some((l) => l.startsWith(autoKernel('f16', 'swiglu').label)) && made.includes('gemm.q4.swiglu.none'), String(made));
    } finally {
      AUTO_WS.q.swiglu = qSwiglu;
    }
  } finally {
    for (const k of ['TPRUN_WGSL_PREFILL', 'TPRUN_WGSL_PREFILL_Q', 'TPRUN_WGSL_PREFILL_WS']) { if (k in saved) process.env[k] = saved[k]; else delete process.env[k]; }
  }
});

test('prefill variants: smaller GEMM tiles and the grouped (default) and block prompt attentions give the per-query path\'s tokens and logits (brown-llama-a, a 45-token prompt over several key tiles and query blocks)', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const long = { input_ids: [...REF.prompts.flatMap((p) => p.input_ids), ...REF.prompts.flatMap((p) => p.input_ids)].slice(0, 45) };
  const prompts = [REF.prompts[0], long];
  const run = async (env) => {
    const r = await tprun(generateArgs(prompts), { env, timeoutMs: 300000 });
    assert.equal(r.code, 0, `${JSON.stringify(env)}: ${r.stderr}`);
    return jsonLines(r.stdout);
  };
  // The decode kernel once per query (what prefill ran before the block kernel) as the reference.
  const base = await run({ TPRUN_WGSL_PREFILL: 'tiled', TPRUN_WGSL_PREFILL_ATTN: 'query' });
  assert.deepEqual(base[0].new_ids, REF.prompts[0].greedy_new_ids.slice(0, NEW));
  for (const env of [{ TPRUN_WGSL_PREFILL: 'tiled' }, { TPRUN_WGSL_PREFILL: 'tiled', TPRUN_WGSL_PREFILL_ATTN: 'block' }, { TPRUN_WGSL_PREFILL: 'tiled-t16-n32' }, { TPRUN_WGSL_PREFILL: 'tiled-n32', TPRUN_WGSL_PREFILL_ATTN: 'query' }]) {
    const out = await run(env);
    out.forEach((o, b) => {
      assert.deepEqual(o.new_ids, base[b].new_ids, `${JSON.stringify(env)}, prompt ${b}: greedy tokens`);
      // Same sums in the same order per output; the attention's softmax is rescaled per tile instead of per 512 positions.
      const err = relL2(o.last_prompt_logits, base[b].last_prompt_logits);
      assert.ok(err < 1e-5, `${JSON.stringify(env)}, prompt ${b}: logits ${err} from the reference path`);
    });
  }
  const bad = await tprun(generateArgs(prompts.slice(0, 1)), { env: { TPRUN_WGSL_PREFILL_ATTN: 'flash' } });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /TPRUN_WGSL_PREFILL_ATTN=flash: not one of group\|block\|query/);
  assert.equal(bad.stdout, '');
});

test('block prompt attention equals the per-query decode kernel on random data: head sizes 64/80/128, GQA 1 and 4, a past before the prompt, partial blocks', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const { attentionShader } = await import('../dist/engine/wgsl/kernels/attention.js');
  const { attentionPrefillShader, ATTN_PREFILL_QB } = await import('../dist/engine/wgsl/kernels/attention-prefill.js');
  const { layout, pipeline, uniform, bindGroup } = await import('../dist/engine/wgsl/kernels/common.js');
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create([]);
  const device = await must(await gpu.requestAdapter(), 'a WebGPU adapter').requestDevice();
  try {
    const bgl = layout(device, ['u', 'u', 'r', 'r', 'r', 'w'], 'attention');
    const perQuery = pipeline(device, attentionShader(false), bgl, 'attention');
    const block = pipeline(device, attentionPrefillShader(false), bgl, 'attention.prefill');
    let seed = 7;
    const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32 * 2 - 1; };
    const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buf = (a) => { const b = device.createBuffer({ size: a.byteLength, usage: S }); device.queue.writeBuffer(b, 0, a); return b; };
    for (const [D, Hq, Hkv, T, pos0] of [[64, 4, 1, 37, 0], [80, 4, 4, 19, 21], [128, 8, 2, 9, 3], [64, 2, 1, 1 + ATTN_PREFILL_QB, 40]]) {
      const cap = pos0 + T + 5, row = 1, rows = 2;
      const qs = (Hq + 2 * Hkv) * D;
      const qkv = new Float32Array(T * qs).map(rnd);
      const kc = new Float32Array(rows * Hkv * cap * D).map(() => rnd() * 2);
      const vc = new Float32Array(rows * Hkv * cap * D).map(rnd);
      const bufs = [uniform(device, [Hq, Hkv, D, qs, { f: 1 / Math.sqrt(D) }, 1], 'p'), uniform(device, [T, pos0, row, cap], 'step'), buf(qkv), buf(kc), buf(vc)];
      const results = [];
      for (const [p, grid] of /** @type {[GPUComputePipeline, [number, number]][]} */ ([[perQuery, [Hq, T]], [block, [Hq, Math.ceil(T / ATTN_PREFILL_QB)]]])) {
        const out = device.createBuffer({ size: T * Hq * D * 4, usage: S });
        const read = device.createBuffer({ size: T * Hq * D * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        const enc = device.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(p);
        pass.setBindGroup(0, bindGroup(device, bgl, [...bufs, out], 'attention'));
        pass.dispatchWorkgroups(...grid);
        pass.end();
        enc.copyBufferToBuffer(out, 0, read, 0, T * Hq * D * 4);
        device.queue.submit([enc.finish()]);
        await read.mapAsync(GPUMapMode.READ);
        results.push(new Float32Array(read.getMappedRange().slice(0)));
        read.unmap();
      }
      const err = relL2(results[1], results[0]);
      assert.ok(err < 1e-5, `D ${D}, ${Hq}/${Hkv} heads, T ${T} after ${pos0}: block attention ${err} from the per-query kernel`);
    }
  } finally {
    device.destroy();
    globalThis.keepDawnInstance = gpu; // the instance outlives its device (gpu.ts)
  }
});

test('a prompt submitted in several command buffers (TPRUN_WGSL_SUBMIT) gives the same tokens and logits, bit for bit, as one buffer; a bad value is refused in one line', async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const prompts = [REF.prompts[0], REF.prompts[1]];
  // The tiled GEMM on every adapter: auto's split-K adds its partial sums in whatever order they land, so
  // only a prefill without it gives the same bits from run to run; how the passes are submitted is what is compared.
  const run = async (env) => {
    const r = await tprun(generateArgs(prompts), { env: { TPRUN_WGSL_PREFILL: 'tiled', ...env }, timeoutMs: 300000 });
    assert.equal(r.code, 0, `${JSON.stringify(env)}: ${r.stderr}`);
    return jsonLines(r.stdout);
  };
  const one = await run({ TPRUN_WGSL_SUBMIT: '0' });
  assert.deepEqual(one[0].new_ids, REF.prompts[0].greedy_new_ids.slice(0, NEW));
  for (const every of ['4', '']) {
    const out = await run({ TPRUN_WGSL_SUBMIT: every });
    out.forEach((o, b) => {
      assert.deepEqual(o.new_ids, one[b].new_ids, `TPRUN_WGSL_SUBMIT=${every}, prompt ${b}: greedy tokens`);
      assert.deepEqual(o.last_prompt_logits, one[b].last_prompt_logits, `TPRUN_WGSL_SUBMIT=${every}, prompt ${b}: logits`);
    });
  }
  const bad = await tprun(generateArgs(prompts.slice(0, 1)), { env: { TPRUN_WGSL_SUBMIT: '2' } });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /TPRUN_WGSL_SUBMIT=2: not 0 \(one command buffer\) or a whole number of dispatches >= 4/);
  assert.equal(bad.stdout, '');
});
