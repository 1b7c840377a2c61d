// The prefill GEMM kernels of --kernels wgsl side by side on this adapter, through the runtime's own
// pipelines (dist/engine/wgsl/pipelines.js, one per TPRUN_WGSL_PREFILL value): every one is checked, then
// timed. Usage (after `npx tsc -p .`):
//   node scripts/gpu/sgmat-check.mjs [KNOB...]      (default: tiled sgmat sgmat2) → JSON lines on stdout
// (KNOB: a TPRUN_WGSL_PREFILL value, with @cvt for TPRUN_WGSL_Q_UNPACK=cvt; SHAPES=q4-o,edge... picks shapes)
// Checks, per shape (the TinyLlama-1.1B prefill linears at 128 tokens, float16 and int4 MatMulNBits with
// 128-k blocks as tprun's int4_wo builds them, and odd shapes whose edge tiles are partial in tokens, rows
// and K: int4 with 16-k blocks, zero points and an AWQ prequant factor, int8) and epilogue (store, add into
// y, SwiGLU over gate/up):
//   exact: x and W are small integers / 8 (quantized: (q − z) · s · g with powers of two s, g), so f16
//          holds them and every f32 partial sum is exact: store and add must equal the float64 reference
//          bit for bit (SwiGLU: to 1e-5, it goes through exp);
//   real:  x full-precision floats, W random f16 (quantized: random nibbles / bytes, real scales): error
//          relative to the float64 reference's largest value (sgmat rounds x to f16 as llama.cpp's Vulkan
//          mul_mm does, and dequantized weights to f16; sgmat2 keeps x's rounding error).
// A knob the adapter cannot run (sgmat without subgroup matrices) is reported and skipped; the process
// exits 1 when an exact check fails. `kernel` names the pipeline that ran (an int4 shape runs the FMA
// tiled GEMM under the knobs with no quantized form). Timing, after every knob's checks on a shape: ROUNDS
// rounds (default 3) of 3 warm-up and 30 timed dispatches in one pass per knob, interleaved so that clock
// changes hit every knob alike; the best round's GPU-bound wall time per GEMM, TFLOP/s, the ratio to the
// first knob.
process.env.TPRUN_WGSL_PREFILL = 'auto'; // the device with subgroup matrices where the adapter has them (gpu.ts)
const { openWgslDevice } = await import('../../dist/engine/wgsl/gpu.js');
const { Pipelines } = await import('../../dist/engine/wgsl/pipelines.js');
const { bindGroup, uniform } = await import('../../dist/engine/wgsl/kernels/common.js');

const knobs = process.argv.length > 2 ? process.argv.slice(2) : ['tiled', 'sgmat', 'sgmat2'];
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const gpu = await openWgslDevice();
const dev = gpu.device;
out({ adapter: gpu.adapter, subgroups: gpu.subgroups, sgmat: gpu.sgmat ?? null, workgroup_storage: dev.limits.maxComputeWorkgroupStorageSize });

const only = process.env.SHAPES?.split(','); // e.g. SHAPES=edge for a quick run on a CPU device
const shapes = [
  { name: 'qkv', T: 128, K: 2048, n: 2560, ep: 'store' },
  { name: 'o', T: 128, K: 2048, n: 2048, ep: 'add' },
  { name: 'gate_up', T: 128, K: 2048, n: 5632, ep: 'swiglu' },
  { name: 'down', T: 128, K: 5632, n: 2048, ep: 'add' },
  { name: 'edge', T: 77, K: 264, n: 200, ep: 'store' },
  { name: 'edge', T: 77, K: 264, n: 200, ep: 'swiglu' },
  { name: 'edge', T: 5, K: 72, n: 40, ep: 'add' },
  { name: 'q4-qkv', T: 128, K: 2048, n: 2560, ep: 'store', q: { bits: 4, bs: 128 } },
  { name: 'q4-o', T: 128, K: 2048, n: 2048, ep: 'add', q: { bits: 4, bs: 128 } },
  { name: 'q4-gate_up', T: 128, K: 2048, n: 5632, ep: 'swiglu', q: { bits: 4, bs: 128 } },
  { name: 'q4-down', T: 128, K: 5632, n: 2048, ep: 'add', q: { bits: 4, bs: 128 } },
  { name: 'q4-edge', T: 77, K: 260, n: 200, ep: 'swiglu', q: { bits: 4, bs: 16, zp: true, pre: true } },
  { name: 'q4-edge', T: 5, K: 100, n: 40, ep: 'add', q: { bits: 4, bs: 32, zp: true } },
  { name: 'q8-edge', T: 77, K: 264, n: 200, ep: 'store', q: { bits: 8, bs: 64, pre: true } },
].filter((s) => !only || only.includes(s.name));
const ROUNDS = Number(process.env.ROUNDS ?? 3);

let seed = 12345;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32; };
const smallInt = () => Math.floor(rnd() * 9 - 4) / 8; // {-4..4} / 8
// Exact for the values used here (normal f16 numbers with at most 11 significant bits).
function toHalf(v) {
  if (v === 0) return 0;
  const s = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}
const silu = (a) => a / (1 + Math.exp(-a));

/**
 * MatMulNBits rows as upload-nbits.ts lays them out (each row's blocks contiguous, low nibble first, rows
 * padded to 16 bytes; scales and zero points f32 per block; g, the prequant factor per part) and their
 * dequantized values. exact: q − z in −4..4, s and g powers of two; real: q uniform, s ~ 1/64, z the default.
 * Bytes past K in the last block are garbage, which must add nothing (they meet zero activations).
 */
function quantized(exact, { bits, bs, zp, pre }, K, rows, parts) {
  const nb = Math.ceil(K / bs), rowBytes = (nb * bs * bits) / 8, padded = Math.ceil(rowBytes / 16) * 16;
  const z0 = 2 ** (bits - 1), per = rows / parts;
  const bytes = new Uint8Array(rows * padded), scales = new Float32Array(rows * nb), zeros = new Float32Array(rows * nb).fill(z0);
  const g = Float32Array.from({ length: parts * K }, () => (!pre ? 1 : exact ? 2 ** (Math.floor(rnd() * 3) - 1) : 0.5 + rnd()));
  const w = new Float64Array(rows * K);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      scales[r * nb + b] = exact ? 2 ** -(1 + Math.floor(rnd() * 3)) : (1 + rnd()) / 64;
      if (zp) zeros[r * nb + b] = exact ? z0 + Math.floor(rnd() * 5) - 2 : Math.floor(rnd() * 2 ** bits);
    }
    for (let k = 0; k < nb * bs; k++) {
      const blk = r * nb + Math.floor(k / bs);
      const q = k < K && exact ? zeros[blk] + Math.floor(rnd() * 9) - 4 : Math.floor(rnd() * 2 ** bits);
      if (bits === 8) bytes[r * padded + k] = q; else bytes[r * padded + (k >> 1)] |= q << ((k & 1) * 4);
      if (k < K) w[r * K + k] = (q - zeros[blk]) * scales[blk] * g[Math.floor(r / per) * K + k];
    }
  }
  return { w, bytes, scales, zeros: zp ? zeros : undefined, g: pre ? g : undefined, nb, KU: padded / 16 };
}

const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const buffer = (data) => { const b = dev.createBuffer({ size: Math.max(16, data.byteLength), usage: S }); dev.queue.writeBuffer(b, 0, data); return b; };

const pls = {};
for (const k of knobs) {
  // KNOB@cvt: the int4 / int8 dequantization in f32 per value (TPRUN_WGSL_Q_UNPACK=cvt) instead of f16 pairs.
  const [pf, unpack] = k.split('@');
  process.env.TPRUN_WGSL_PREFILL = pf;
  process.env.TPRUN_WGSL_Q_UNPACK = unpack ?? 'exp';
  try {
    if (k.startsWith('sgmat') && !gpu.sgmat) throw new Error('the adapter has no subgroup matrices (with f16 -> f32 shapes)');
    dev.pushErrorScope('validation');
    const pl = new Pipelines(dev, gpu.subgroups, gpu.kv16, gpu.sgmat);
    const e = await dev.popErrorScope();
    if (e) throw new Error(e.message.split('\n')[0]);
    pls[k] = pl;
  } catch (e) { out({ knob: k, skipped: String(e.message ?? e).slice(0, 300) }); }
}

let failed = 0;
const refused = new Set(); // knob + kernel pairs whose pipeline the device refused
for (const sh of shapes) {
  const { T, K, n, ep, q } = sh;
  const pairs = ep === 'swiglu' ? 2 : 1;
  const fmt = !q ? 'f16' : q.bits === 4 ? 'q4' : 'q8';
  const prologue = q?.pre ? 'scale' : 'none';
  for (const mode of ['exact', 'real']) {
    const qw = q && quantized(mode === 'exact', q, K, pairs * n, pairs);
    const w = qw ? qw.w : new Float64Array(pairs * n * K).map(() => (mode === 'exact' ? smallInt() : Math.round((rnd() * 2 - 1) * 512) / 4096));
    const x = new Float32Array(T * K).map(() => (mode === 'exact' ? smallInt() : (rnd() * 2 - 1) * 3));
    // y has PAD rows past T: the edge tiles compute them, and must not write them.
    const PAD = 40;
    const y0 = new Float32Array((T + PAD) * n).map(() => (ep === 'add' ? smallInt() : 0.5));
    let wdata;
    if (qw) wdata = qw.bytes;
    else {
      // 16 zero rows after the weights, as upload.ts leaves after every chunk (edge tiles load whole 16-row tiles).
      wdata = new Uint16Array(w.length + 16 * K); for (let i = 0; i < w.length; i++) wdata[i] = toHalf(w[i]);
    }
    // Reference on every 7th token (all of them for the small shapes).
    const tStep = T * n * K > 5e7 ? 7 : 1;
    const ref = new Float64Array(T * n);
    for (let t = 0; t < T; t += tStep) {
      for (let o = 0; o < n; o++) {
        const dot = (qq) => { let s = 0; const r = (o + qq * n) * K; for (let k = 0; k < K; k++) s += x[t * K + k] * w[r + k]; return s; };
        ref[t * n + o] = ep === 'swiglu' ? silu(dot(0)) * dot(1) : ep === 'add' ? y0[t * n + o] + dot(0) : dot(0);
      }
    }
    let refMax = 0; for (let t = 0; t < T; t += tStep) for (let o = 0; o < n; o++) refMax = Math.max(refMax, Math.abs(ref[t * n + o]));
    const W = buffer(wdata), X = buffer(x), Y = buffer(y0);
    const extra = qw ? [buffer(qw.scales), buffer(qw.zeros ?? qw.scales), ...(qw.g ? [buffer(qw.g)] : [])] : [];
    const read = dev.createBuffer({ size: y0.byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const step = uniform(dev, [T, 0, 0, T], 'step');
    // The GEMV / GEMM uniform as layers.ts writes it (float16: units of 8 k; MatMulNBits: 16-byte units of the padded row).
    const p = uniform(dev, qw ? [qw.KU, n, 0, n, K / 4, K, q.bs, qw.nb, { f: 0 }, { f: 2 ** (q.bits - 1) }, q.zp ? 1 : 0] : [K / 8, n, 0, n, K / 4], 'p');
    const runs = [];
    for (const [k, pl] of Object.entries(pls)) {
      // The kernel compiles here, on first use: a shader the driver refuses is a failed check, not a crash.
      const kk = `${k} ${fmt}.${ep}.${prologue}`;
      if (refused.has(kk)) continue;
      dev.pushErrorScope('validation');
      const kern = pl.gemv(fmt, ep, prologue);
      const bad0 = await dev.popErrorScope();
      if (bad0) { failed++; refused.add(kk); out({ check: 'prefill-gemm', knob: k, shape: sh.name, fmt, epilogue: ep, mode, error: bad0.message.split('\n')[0].slice(0, 300) }); continue; }
      const bg = bindGroup(dev, kern.bgl, [p, step, W, X, Y, ...extra], 'check');
      // The grid as layers.ts sizes it, from the kernel's own dispatch tile.
      const grid = [Math.ceil(T / kern.prefillTile.tm), Math.ceil(n / kern.prefillTile.rows)];
      const go = (reps) => {
        const enc = dev.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(kern.prefill);
        pass.setBindGroup(0, bg);
        for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(...grid);
        pass.end();
        dev.queue.submit([enc.finish()]);
        return dev.queue.onSubmittedWorkDone();
      };
      dev.queue.writeBuffer(Y, 0, y0);
      await go(1);
      const enc = dev.createCommandEncoder();
      enc.copyBufferToBuffer(Y, 0, read, 0, y0.byteLength);
      dev.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const y = new Float32Array(read.getMappedRange().slice(0));
      read.unmap();
      let bad = 0, maxErr = 0, first;
      for (let t = 0; t < T; t += tStep) {
        for (let o = 0; o < n; o++) {
          const i = t * n + o;
          const err = Math.abs(y[i] - ref[i]);
          maxErr = Math.max(maxErr, Number.isFinite(err) ? err : Infinity);
          const ok = mode !== 'exact' ? Number.isFinite(y[i]) : ep === 'swiglu' ? err <= 1e-5 * Math.max(1, Math.abs(ref[i])) : y[i] === ref[i];
          if (!ok) { bad++; first ??= { t, o, got: y[i], want: ref[i] }; }
        }
      }
      for (let t = T; t < T + PAD; t++) for (let o = 0; o < n; o++) if (y[t * n + o] !== y0[t * n + o]) bad++;
      if (bad) failed++;
      const rec = { check: 'prefill-gemm', knob: k, kernel: kern.prefill.label, shape: sh.name, fmt, T, K, n, epilogue: ep, mode, mismatches: bad, first, rel_err: +(maxErr / (refMax || 1)).toExponential(2), grid };
      if (mode === 'exact') out(rec); else runs.push({ rec, go });
    }
    // Timing: rounds interleaved over the knobs, the best round of each.
    const best = new Map();
    for (let r = 0; r < ROUNDS; r++) {
      for (const { rec, go } of runs) {
        await go(3);
        const reps = 30, t0 = performance.now();
        await go(reps);
        const ms = (performance.now() - t0) / reps;
        best.set(rec, Math.min(best.get(rec) ?? Infinity, ms));
      }
    }
    const base = runs.length ? best.get(runs[0].rec) : 0;
    for (const { rec } of runs) {
      const ms = best.get(rec);
      out(Object.assign(rec, { ms: +ms.toFixed(4), tflops: +((2 * T * K * n * pairs) / ms / 1e9).toPrecision(3), speedup_vs_first: +(base / ms).toFixed(2) }));
    }
    for (const b of [W, X, Y, read, step, p, ...extra]) b.destroy();
  }
}
out({ check: 'prefill-gemm-summary', knobs: Object.keys(pls), failed });
await new Promise((r) => process.stdout.write('', r));
process.exit(failed ? 1 : 0);
