// The grouped prompt attention (src/engine/wgsl/kernels/attention-group.ts: one workgroup per kv head and
// block of (position, query head) rows) RUN on CI's lavapipe against a float64 reference on random data:
// head sizes 64/80/128 (and 32, 96), GQA ratios 1..8 with head counts that are multiples of nothing in
// particular, prompts of 1 token, of a few, and of lengths that are no multiple of the row block or the
// key tile, prompts appended to a cache that already holds earlier positions (a second turn), float32 and
// float16 caches, every tile the device holds; and the per-query decode kernel on the same data (the
// path before) as a second opinion. The model-level check is test/engine-wgsl-prefill.test.js.
import { must } from './helpers/must.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { relL2 } from './helpers/engine.js';

/** Exact for the values used here (k / 256 with |k| < 2048: at most 11 significant bits). */
function toHalf(v) {
  if (v === 0) return 0;
  const s = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}

async function device(t) {
  let mod;
  try { mod = await import('webgpu'); } catch (e) { t.skip(`no Dawn binding: ${e.message}`); return undefined; }
  const { create, globals } = mod;
  Object.assign(globalThis, globals);
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) { t.skip('Dawn finds no WebGPU adapter'); return undefined; }
  const f16 = adapter.features.has('shader-f16');
  const dev = await adapter.requestDevice({
    requiredFeatures: f16 ? ['shader-f16'] : [],
    requiredLimits: { maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize },
  });
  globalThis.keepDawnInstance = gpu; // the instance outlives its device (gpu.ts)
  return { dev, f16 };
}

test('grouped prompt attention equals a float64 reference (head sizes, GQA ratios, prompt lengths, a past, f16/f32 cache, the tiles in turn)', async (t) => {
  const d = await device(t);
  if (!d) return;
  const { dev, f16 } = d;
  const { attentionShader } = await import('../dist/engine/wgsl/kernels/attention.js');
  const { attentionGroupShader, GROUP_TILES, groupTileProblem, groupGrid, pickGroupTile } = await import('../dist/engine/wgsl/kernels/attention-group.js');
  const { layout, pipeline, uniform, bindGroup } = await import('../dist/engine/wgsl/kernels/common.js');
  const lim = dev.limits.maxComputeWorkgroupStorageSize;
  const thr = dev.limits.maxComputeInvocationsPerWorkgroup;
  // The default tile on any WebGPU device (16 KiB of workgroup memory at least) for the common head sizes.
  assert.ok(pickGroupTile(64, 16384, 256), 'a tile for head 64 in 16 KiB');
  assert.ok(pickGroupTile(128, 32768, 256), 'a tile for head 128 in 32 KiB');
  assert.equal(pickGroupTile(256, 32768, 256), undefined, 'head 256 does not fit 32 KiB: the caller keeps the older kernels');
  assert.match(groupTileProblem(66, { RB: 32, KT: 32 }, lim, thr) ?? '', /head size 66 is not a multiple of 4/);
  const bgl = layout(dev, ['u', 'u', 'r', 'r', 'r', 'w'], 'attention');
  let seed = 11;
  const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32 * 2 - 1; };
  const q256 = () => Math.round(rnd() * 512) / 256; // exact in f16
  const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const buf = (a) => { const b = dev.createBuffer({ size: Math.max(16, a.byteLength), usage: S }); dev.queue.writeBuffer(b, 0, a); return b; };
  /** @param {GPUComputePipeline} p @param {[number, number]} grid @param {GPUBuffer[]} bufs @param {number} n */
  const run = async (p, grid, bufs, n) => {
    const out = dev.createBuffer({ size: n * 4, usage: S });
    const read = dev.createBuffer({ size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(p);
    pass.setBindGroup(0, bindGroup(dev, bgl, [...bufs, out], 'attention'));
    pass.dispatchWorkgroups(...grid);
    pass.end();
    enc.copyBufferToBuffer(out, 0, read, 0, n * 4);
    dev.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const r = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    out.destroy(); read.destroy();
    return r;
  };
  // Lavapipe compiles each kernel for 10-25 s (LLVM, unrolled loops): each case runs one tile, the tiles (the defaults,
  // and 2 rows per thread, which scripts/gpu/attn-check.mjs times) taken in turn.
  /** @type {[number, number, number, number, number, boolean][]} D, Hq, Hkv, T, pos0, float16 cache */
  const cases = [
    [64, 8, 1, 37, 0, false], // GQA 8:1 (TinyLlama's ratio), T not a multiple of the block
    [64, 8, 1, 37, 0, true],
    [64, 12, 4, 70, 0, false], // several row blocks and key tiles per kv head
    [64, 4, 4, 1, 0, true], // one token, MHA
    [80, 6, 2, 19, 21, true], // a second turn: 21 positions already in the cache
    [128, 8, 2, 9, 3, false],
    [128, 5, 5, 33, 0, true], // MHA with 5 heads: a block's rows span positions
    [32, 3, 1, 50, 7, false],
    [96, 14, 2, 5, 60, false], // GQA 7:1
    [64, 2, 1, 1, 40, false], // one token after 40
  ];
  let ran = 0;
  let turn = 0;
  for (const [D, Hq, Hkv, T, pos0, kv16] of cases) {
    if (kv16 && !f16) continue;
    const cap = pos0 + T + 5, row = 1, rows = 2;
    const qs = (Hq + 2 * Hkv) * D;
    const G = Hq / Hkv;
    const scale = 1 / Math.sqrt(D);
    const qkv = new Float32Array(T * qs).map(rnd);
    const k = new Float64Array(rows * Hkv * cap * D).map(() => q256() * 1.5);
    const v = new Float64Array(rows * Hkv * cap * D).map(q256);
    const cacheOf = (a) => kv16 ? Uint16Array.from(a, toHalf) : Float32Array.from(a);
    // Float64 reference.
    const ref = new Float64Array(T * Hq * D);
    for (let tt = 0; tt < T; tt++) {
      for (let h = 0; h < Hq; h++) {
        const kvh = Math.floor(h / G), base = (row * Hkv + kvh) * cap * D, n = pos0 + tt + 1;
        const sc = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let dd = 0; dd < D; dd++) s += qkv[tt * qs + h * D + dd] * k[base + j * D + dd];
          sc[j] = s * scale; mx = Math.max(mx, sc[j]);
        }
        let l = 0;
        for (let j = 0; j < n; j++) { sc[j] = Math.exp(sc[j] - mx); l += sc[j]; }
        for (let dd = 0; dd < D; dd++) {
          let a = 0;
          for (let j = 0; j < n; j++) a += sc[j] * v[base + j * D + dd];
          ref[tt * Hq * D + h * D + dd] = a / l;
        }
      }
    }
    const bufs = [uniform(dev, [Hq, Hkv, D, qs, { f: scale }, 1], 'p'), uniform(dev, [T, pos0, row, cap], 'step'), buf(qkv), buf(cacheOf(k)), buf(cacheOf(v))];
    const what = `D ${D}, ${Hq}/${Hkv} heads, T ${T} after ${pos0}, ${kv16 ? 'f16' : 'f32'} cache`;
    const perQuery = await run(pipeline(dev, attentionShader(kv16), bgl, 'attention'), [Hq, T], bufs, T * Hq * D);
    assert.ok(relL2(perQuery, ref) < 1e-5, `${what}: the per-query kernel ${relL2(perQuery, ref)} from float64`);
    const fits = [...GROUP_TILES, { RB: 32, KT: 32, RPT: 2 }, { RB: 16, KT: 32, RPT: 2 }].filter((tl) => !groupTileProblem(D, tl, lim, thr));
    for (const tile of fits.length ? [fits[turn++ % fits.length]] : []) {
      dev.pushErrorScope('validation');
      const p = pipeline(dev, attentionGroupShader(D, kv16, tile), bgl, 'attention.group');
      const got = await run(p, groupGrid(tile, T, Hq, Hkv), bufs, T * Hq * D);
      const e = await dev.popErrorScope();
      assert.equal(e, null, `${what}, tile ${JSON.stringify(tile)}: ${e?.message}`);
      let worst = 0;
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
      const err = relL2(got, ref);
      assert.ok(err < 1e-5 && worst < 1e-4, `${what}, tile ${JSON.stringify(tile)}: relative L2 ${err}, worst ${worst} from float64`);
      assert.ok(relL2(got, perQuery) < 1e-5, `${what}, tile ${JSON.stringify(tile)}: far from the per-query kernel`);
      ran++;
    }
    for (const b of bufs) b.destroy();
  }
  assert.ok(ran >= 8, `only ${ran} kernel runs: no tile fits this device`);
  dev.destroy();
});

test('the grouped attention pipeline is one of Pipelines\' (a stub device: no kernel runs): compiled once per head size and tile, an explicit tile honoured, none where no tile fits', async () => {
  const { Pipelines } = await import('../dist/engine/wgsl/pipelines.js');
  const { GROUP_TILES, groupGrid } = await import('../dist/engine/wgsl/kernels/attention-group.js');
  globalThis.GPUShaderStage ??= /** @type {any} */ ({ COMPUTE: 4 });
  /** @type {string[]} */
  const made = [];
  const stub = () => ({});
  const compute = (/** @type {any} */ o) => { made.push(o?.label ?? ''); return { label: o?.label }; };
  const device = (/** @type {number} */ bytes) => /** @type {any} */ ({ limits: { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: bytes }, createBindGroupLayout: stub, createShaderModule: stub, createComputePipeline: compute, createPipelineLayout: stub });
  const pl = new Pipelines(device(32768), true, true);
  const dims = { Hq: 8, Hkv: 4, D: 32 };
  made.length = 0;
  const a = must(pl.groupAttention(dims), 'the default tile at head size 32');
  assert.deepEqual(a.tile, GROUP_TILES[0]);
  assert.deepEqual(a.size(45), groupGrid(GROUP_TILES[0], 45, 8, 4));
  assert.equal(must(pl.groupAttention({ Hq: 16, Hkv: 2, D: 32 }), 'a tile for 16/2 heads').p, a.p, 'another head count at the same head size shares the pipeline');
  assert.deepEqual(made.filter((l) => l.startsWith('attention.group')), ['attention.group.32.f16.r32.k32.p4'], 'compiled once');
  const tile = { RB: 16, KT: 32, RPT: 2 };
  const b = must(pl.groupAttention(dims, tile), 'the explicit tile');
  assert.deepEqual(b.tile, tile);
  assert.notEqual(b.p, a.p);
  assert.ok(made.includes('attention.group.32.f16.r16.k32.p2'), String(made));
  assert.equal(new Pipelines(device(1024), true, false).groupAttention(dims), undefined, 'no tile fits 1024 bytes of workgroup memory');
});
