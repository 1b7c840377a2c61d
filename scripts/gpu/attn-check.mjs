// A prompt's attention kernels of --kernels wgsl side by side on this adapter (issue 15): the decode kernel once per
// query (TPRUN_WGSL_PREFILL_ATTN=query), the block kernel per head and 8 queries (=block, kernels/attention-prefill.ts)
// and the grouped kernel per kv head (the default, kernels/attention-group.ts) with each tile the device holds.
// Usage (after `npx tsc -p .`):  node scripts/gpu/attn-check.mjs  → JSON lines on stdout
// Per shape (TinyLlama-1.1B's 32/4 heads of 64 at 128 and 512 tokens, a second turn of 128 after 384, and heads of
// 128 and 80) and KV cache type (the device's: float16 where it has shader-f16, and float32):
//   check: every kernel against a float64 reference on every 5th token (relative L2 and worst error; K/V values are
//          exact in float16, so both cache types have the same reference); a kernel past 1e-5 relative L2 fails;
//   time:  50 calls in one compute pass after 3 warm-up ones (each waits for the previous: they write the same
//          output), wall time per call, as µs, GFLOP/s (4·T·ctx·head·heads / 2 causal) and the ratio to `block`.
// Exits 1 when a check fails.
const { openWgslDevice } = await import('../../dist/engine/wgsl/gpu.js');
const { attentionShader } = await import('../../dist/engine/wgsl/kernels/attention.js');
const { attentionPrefillShader, ATTN_PREFILL_QB, ATTN_PREFILL_MAX_HEAD } = await import('../../dist/engine/wgsl/kernels/attention-prefill.js');
const { attentionGroupShader, GROUP_TILES, groupTileProblem, groupGrid, pickGroupTile } = await import('../../dist/engine/wgsl/kernels/attention-group.js');
const { layout, pipeline, uniform, bindGroup } = await import('../../dist/engine/wgsl/kernels/common.js');

const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const gpu = await openWgslDevice();
const dev = gpu.device;
const lim = dev.limits.maxComputeWorkgroupStorageSize, thr = dev.limits.maxComputeInvocationsPerWorkgroup;
out({ adapter: gpu.adapter, kv16: gpu.kv16, workgroup_storage: lim });

// Larger and smaller tiles than the defaults, for the record (the first that fits of GROUP_TILES is the default).
// RPT: rows per thread (4 unless named; 2 doubles the threads of a workgroup and halves each one's path).
const tiles = [...GROUP_TILES, { RB: 64, KT: 32 }, { RB: 16, KT: 32 }, { RB: 32, KT: 64 }, { RB: 32, KT: 32, RPT: 2 }, { RB: 16, KT: 32, RPT: 2 }, { RB: 64, KT: 32, RPT: 8 }];
const shapes = [
  { name: 'tinyllama-128', Hq: 32, Hkv: 4, D: 64, T: 128, pos0: 0 },
  { name: 'tinyllama-512', Hq: 32, Hkv: 4, D: 64, T: 512, pos0: 0 },
  { name: 'tinyllama-turn2', Hq: 32, Hkv: 4, D: 64, T: 128, pos0: 384 },
  { name: 'tinyllama-7', Hq: 32, Hkv: 4, D: 64, T: 7, pos0: 0 },
  { name: 'head128-gqa4', Hq: 32, Hkv: 8, D: 128, T: 512, pos0: 0 },
  { name: 'head80-mha', Hq: 12, Hkv: 12, D: 80, T: 256, pos0: 0 },
].filter((s) => !process.env.SHAPES || process.env.SHAPES.split(',').includes(s.name));

let seed = 12345;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32 * 2 - 1; };
const q256 = () => Math.round(rnd() * 512) / 256; // exact in f16
function toHalf(v) {
  if (v === 0) return 0;
  const s = v < 0 ? 0x8000 : 0, a = Math.abs(v), e = Math.floor(Math.log2(a));
  return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}
const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const buffer = (a) => { const b = dev.createBuffer({ size: Math.max(16, a.byteLength), usage: S }); dev.queue.writeBuffer(b, 0, a); return b; };
const bgl = layout(dev, ['u', 'u', 'r', 'r', 'r', 'w'], 'attention');
const relL2 = (a, b, idx) => { let n = 0, d = 0; for (const i of idx) { n += (a[i] - b[i]) ** 2; d += b[i] ** 2; } return Math.sqrt(n / d); };

let failed = 0;
for (const kv16 of gpu.kv16 ? [true, false] : [false]) {
  for (const sh of shapes) {
    const { Hq, Hkv, D, T, pos0 } = sh;
    const G = Hq / Hkv, cap = pos0 + T, qs = (Hq + 2 * Hkv) * D, scale = 1 / Math.sqrt(D);
    const qkv = new Float32Array(T * qs).map(rnd);
    const k = new Float64Array(Hkv * cap * D).map(() => q256() * 1.5);
    const v = new Float64Array(Hkv * cap * D).map(q256);
    const cache = (a) => (kv16 ? Uint16Array.from(a, toHalf) : Float32Array.from(a));
    const tStep = T > 16 ? 5 : 1;
    const ref = new Float64Array(T * Hq * D), idx = [];
    for (let t = 0; t < T; t += tStep) {
      for (let h = 0; h < Hq; h++) {
        const base = Math.floor(h / G) * cap * D, n = pos0 + t + 1, sc = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) { let s = 0; for (let d = 0; d < D; d++) s += qkv[t * qs + h * D + d] * k[base + j * D + d]; sc[j] = s * scale; mx = Math.max(mx, sc[j]); }
        let l = 0;
        for (let j = 0; j < n; j++) { sc[j] = Math.exp(sc[j] - mx); l += sc[j]; }
        for (let d = 0; d < D; d++) { let a = 0; for (let j = 0; j < n; j++) a += sc[j] * v[base + j * D + d]; ref[(t * Hq + h) * D + d] = a / l; idx.push((t * Hq + h) * D + d); }
      }
    }
    const bufs = [uniform(dev, [Hq, Hkv, D, qs, { f: scale }, 1], 'p'), uniform(dev, [T, pos0, 0, cap], 'step'), buffer(qkv), buffer(cache(k)), buffer(cache(v))];
    const n = T * Hq * D;
    const o = dev.createBuffer({ size: n * 4, usage: S });
    const read = dev.createBuffer({ size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const bg = bindGroup(dev, bgl, [...bufs, o], 'attention');
    const kernels = [{ kernel: 'query', code: () => attentionShader(kv16), grid: [Hq, T] }];
    if (D <= ATTN_PREFILL_MAX_HEAD) kernels.push({ kernel: 'block', code: () => attentionPrefillShader(kv16), grid: [Hq, Math.ceil(T / ATTN_PREFILL_QB)] });
    const def = pickGroupTile(D, lim, thr);
    for (const tile of tiles) {
      const why = groupTileProblem(D, tile, lim, thr);
      const name = `group-r${tile.RB}-k${tile.KT}${tile.RPT ? `-p${tile.RPT}` : ''}`;
      if (why) { out({ check: 'attn', kernel: name, shape: sh.name, skipped: why }); continue; }
      kernels.push({ kernel: name, default: def && def.RB === tile.RB && def.KT === tile.KT && (def.RPT ?? 4) === (tile.RPT ?? 4), code: () => attentionGroupShader(D, kv16, tile), grid: groupGrid(tile, T, Hq, Hkv) });
    }
    const times = {};
    for (const kn of kernels) {
      dev.pushErrorScope('validation');
      const p = pipeline(dev, kn.code(), bgl, kn.kernel);
      const go = (reps) => {
        const enc = dev.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(p);
        pass.setBindGroup(0, bg);
        for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(...kn.grid);
        pass.end();
        dev.queue.submit([enc.finish()]);
        return dev.queue.onSubmittedWorkDone();
      };
      dev.queue.writeBuffer(o, 0, new Float32Array(n).fill(NaN));
      await go(1);
      const e = await dev.popErrorScope();
      if (e) { failed++; out({ check: 'attn', kernel: kn.kernel, shape: sh.name, error: e.message.split('\n')[0] }); continue; }
      const enc = dev.createCommandEncoder();
      enc.copyBufferToBuffer(o, 0, read, 0, n * 4);
      dev.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const got = new Float32Array(read.getMappedRange().slice(0));
      read.unmap();
      let worst = 0;
      for (const i of idx) worst = Math.max(worst, Number.isFinite(got[i]) ? Math.abs(got[i] - ref[i]) : Infinity);
      const rel = relL2(got, ref, idx);
      const ok = rel < 1e-5;
      if (!ok) failed++;
      await go(3);
      const reps = T >= 256 ? 20 : 50, t0 = performance.now();
      await go(reps);
      const ms = (performance.now() - t0) / reps;
      times[kn.kernel] = ms;
      const flop = 4 * Hq * D * T * (pos0 + (T + 1) / 2);
      out({ check: 'attn', kernel: kn.kernel, ...(kn.default ? { default: true } : {}), shape: sh.name, Hq, Hkv, D, T, pos0, kv: kv16 ? 'float16' : 'float32',
        grid: kn.grid, rel_l2: +rel.toExponential(2), max_err: +worst.toExponential(2), ok,
        us: +(ms * 1000).toFixed(1), gflops: +(flop / ms / 1e6).toFixed(1), ...(times.block ? { speedup_vs_block: +(times.block / ms).toFixed(2) } : {}) });
    }
    for (const b of [...bufs, o, read]) b.destroy();
  }
}
out({ check: 'attn-summary', failed });
await new Promise((r) => process.stdout.write('', r));
process.exit(failed ? 1 : 0);
