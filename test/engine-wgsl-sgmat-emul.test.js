// The staged subgroup-matrix prefill GEMM (kernels/gemm.ts sgmatWsShader; float16 weights, and MatMulNBits
// int4 / int8 ones dequantized as they are staged) RUN on an adapter without
// subgroup matrices (CI's lavapipe): its generated WGSL with each subgroup-matrix builtin replaced by a
// per-invocation emulation (each invocation of a subgroup computes its share of each result fragment; the layouts are
// the ones WGSL's chromium_experimental_subgroup_matrix defines: row_major element (r, c) at offset + r·stride + c,
// col_major at offset + c·stride + r). What this checks is the part tprun writes: the staging of x and W
// through workgroup memory one K slice ahead, the dequantization (nibble order, block scales, zero points,
// the AWQ prequant factor, garbage past K), the tile and subgroup offsets, k/token/row edges, split-K
// and the epilogues, bit-exactly against a float64 reference on small-integer inputs (exact in f16 and f32).
// The real builtins' numbers are checked on the GPU by scripts/gpu/sgmat-check.mjs (run.sh sgmat).
import { test } from 'node:test';
import assert from 'node:assert/strict';

/** sgmatWsShader's code with the subgroup-matrix builtins emulated (M × N results, K deep, subgroup size SG). */
function emulate(code, { M, N, K, sg }) {
  let out = code.replace('enable chromium_experimental_subgroup_matrix;\n', '').replace('enable subgroups;\n', '');
  out = out.replace(/,\s*@builtin\(subgroup_id\) sid: u32, @builtin\(subgroup_invocation_id\) lane: u32\) \{/,
    `) {\n  let sid = li / ${sg}u; let lane = li % ${sg}u;`);
  // A fragment load is lazy (its offset and stride: mma reads workgroup memory at once, before the next
  // barrier, as the kernel's own loads do); a result is distributed, each invocation holding MN/SG elements.
  const P = (M * N) / sg;
  out = out.replace(/subgroup_matrix_result<f32, \d+, \d+>\(\)/g, `array<f32, ${P}>()`);
  out = out.replace(/subgroupMatrixLoad<subgroup_matrix_left<f16, \d+, \d+>, row_major>\(&xs, /g, 'frag(');
  out = out.replace(/subgroupMatrixLoad<subgroup_matrix_right<f16, \d+, \d+>, col_major>\(&ws, /g, 'frag(');
  out = out.replace(/subgroupMatrixMultiplyAccumulate\(/g, 'mma(lane, ');
  out = out.replace(/subgroupMatrixStore<row_major>\(&ot, /g, 'stot(lane, ');
  assert.doesNotMatch(out, /subgroup(Matrix|_matrix)/, 'a subgroup-matrix builtin left unemulated');
  return `${out}
fn frag(o: u32, s: u32) -> vec2<u32> { return vec2<u32>(o, s); }
// left: row-major x tile, element (m, k) at o + m·s + k; right: column-major W^T, element (k, n) at o + n·s + k.
fn mma(lane: u32, a: vec2<u32>, b: vec2<u32>, c0: array<f32, ${P}>) -> array<f32, ${P}> {
  var c = c0;
  // A bound the shader compiler cannot fold (pos0 is 0 here): lavapipe would unroll the constant one at
  // every inlined call, and compiling that took minutes.
  let kd = select(${K}u, 0u, st.pos0 == 0xFFFFFFFFu);
  for (var e = 0u; e < ${P}u; e++) {
    let i = lane + e * ${sg}u; let m = i / ${N}u; let n = i % ${N}u;
    var s = c[e];
    for (var k = 0u; k < kd; k++) { s += f32(xs[a.x + m * a.y + k]) * f32(ws[b.x + n * b.y + k]); }
    c[e] = s;
  }
  return c;
}
fn stot(lane: u32, o: u32, c: array<f32, ${P}>, s: u32) {
  for (var e = 0u; e < ${P}u; e++) { let i = lane + e * ${sg}u; ot[o + (i / ${N}u) * s + i % ${N}u] = c[e]; }
}
`;
}

/**
 * MatMulNBits weights for `rows` rows of K (upload-nbits.ts's layout: each row's blocks contiguous, low
 * nibble first, rows padded to 16 bytes; scales and zero points f32 per block) whose dequantized values
 * (q − z) · s · g are small integers over powers of two, so f16 holds them and every f32 sum is exact.
 * The bytes past K in the last block are garbage: they meet zero activations and must add nothing.
 */
function quantized(rnd, { bits, bs, K, rows, zp, pre }) {
  const nb = Math.ceil(K / bs), rowBytes = (nb * bs * bits) / 8, padded = Math.ceil(rowBytes / 16) * 16;
  const z0 = 2 ** (bits - 1);
  const bytes = new Uint8Array(rows * padded), scales = new Float32Array(rows * nb), zeros = new Float32Array(rows * nb).fill(z0);
  const g = Float32Array.from({ length: (rows / (pre?.rowsPerPart ?? rows)) * K }, () => (pre ? 2 ** (Math.floor(rnd() * 3) - 1) : 1));
  const w = new Float64Array(rows * K);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      scales[r * nb + b] = 2 ** -(1 + Math.floor(rnd() * 3));
      if (zp) zeros[r * nb + b] = z0 + Math.floor(rnd() * 5) - 2;
    }
    for (let k = 0; k < nb * bs; k++) {
      const blk = r * nb + Math.floor(k / bs);
      const q = k < K ? zeros[blk] + Math.floor(rnd() * 9) - 4 : Math.floor(rnd() * 2 ** bits); // past K: garbage
      if (bits === 8) bytes[r * padded + k] = q;
      else bytes[r * padded + (k >> 1)] |= q << ((k & 1) * 4);
      if (k < K) w[r * K + k] = (q - zeros[blk]) * scales[blk] * g[Math.floor(r / (pre?.rowsPerPart ?? rows)) * K + k];
    }
  }
  return { w, bytes, scales, zeros: zp ? zeros : undefined, g: pre ? g : undefined, nb, KU: padded / 16 };
}

test('sgmat-ws (subgroup matrices emulated): staging, dequantization, tile offsets, edges, split-K and every epilogue give the float64 reference bit for bit', async (t) => {
  const { sgmatWsShader, wsBytes, wsDispatchTile } = await import('../dist/engine/wgsl/kernels/gemm.js');
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter || !adapter.features.has('shader-f16')) return t.skip("no WebGPU adapter with 'shader-f16' here");
  const limit = adapter.limits.maxComputeWorkgroupStorageSize;
  const dev = await adapter.requestDevice({ requiredFeatures: ['shader-f16'], requiredLimits: { maxComputeWorkgroupStorageSize: limit } });
  let seed = 7;
  const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32; };
  const small = () => Math.floor(rnd() * 9 - 4) / 8;
  const half = (v) => { if (v === 0) return 0; const s = v < 0 ? 0x8000 : 0, a = Math.abs(v), e = Math.floor(Math.log2(a)); return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024); };
  const silu = (a) => a / (1 + Math.exp(-a));
  const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const buf = (data, usage = S) => { const b = dev.createBuffer({ size: Math.max(16, data.byteLength), usage }); dev.queue.writeBuffer(b, 0, data); return b; };
  let ran = 0;
  try {
    // Partial tiles in tokens, rows and K (K not a multiple of the slice: the zero-filled tail), a slice
    // count of one, guarded loads (tile loads not a multiple of the workgroup), 16x16 and 16x8 fragments;
    // int4 with 16-k blocks (two per 32-k unit), per-block zero points, a prequant factor per part and K
    // ending inside a word; int8 with the default zero point; split-K (add only: store and SwiGLU run
    // whole) over 2 workgroups, and over 4 asked where the grid (5 rows of 8 for 2 row tiles) holds 2;
    // both dequantizations (exp: two values per f16 op; cvt: f32 per value), int8 with zero points; two
    // staging buffers (DB), over odd and even slice counts.
    const cases = [
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4 }, T: 37, K: 104, n: 72 },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 64, KC: 64, S: 4 }, T: 50, K: 200, n: 90 },
      { c: { M: 16, N: 8, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4 }, T: 5, K: 24, n: 40 },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 64, TN: 32, KC: 32, S: 8 }, T: 70, K: 40, n: 33 },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4, SK: 4 }, T: 20, K: 136, n: 40, eps: ['add'] },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4 }, T: 37, K: 100, n: 40, q: { bits: 4, bs: 16, zp: true, pre: true } },
      { c: { M: 16, N: 8, K: 16, sg: 32 }, tile: { TT: 32, TN: 64, KC: 64, S: 4 }, T: 20, K: 72, n: 70, q: { bits: 8, bs: 32, zp: false, pre: false } },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4 }, T: 17, K: 68, n: 24, q: { bits: 4, bs: 32, zp: true, pre: true, unpack: 'cvt' }, eps: ['swiglu'] },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4 }, T: 17, K: 48, n: 24, q: { bits: 8, bs: 16, zp: true, pre: true, unpack: 'cvt' }, eps: ['store'] },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4, SK: 2 }, T: 9, K: 200, n: 64, q: { bits: 4, bs: 64, zp: false, pre: false }, eps: ['add', 'store'] },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4, DB: true }, T: 37, K: 136, n: 40, eps: ['store', 'swiglu'] },
      { c: { M: 16, N: 16, K: 16, sg: 32 }, tile: { TT: 32, TN: 32, KC: 32, S: 4, SK: 2, DB: true }, T: 20, K: 232, n: 64, q: { bits: 4, bs: 32, zp: true, pre: false }, eps: ['add'] },
    ];
    for (const { c, tile, T, K, n, q, eps } of cases) {
      for (const ep of /** @type {('store' | 'add' | 'swiglu')[]} */ (eps ?? ['store', 'add', 'swiglu'])) {
        const pairs = ep === 'swiglu' ? 2 : 1;
        const fmt = q ? (q.bits === 4 ? 'q4' : 'q8') : 'f16';
        const prologue = q?.pre ? 'scale' : 'none';
        const what = `${fmt}${q ? ` bs${q.bs}${q.zp ? ' zp' : ''}${q.pre ? ' prequant' : ''} ${q.unpack ?? 'exp'}` : ''} ${c.M}x${c.N}x${c.K} ${JSON.stringify(tile)} ${ep} T=${T} K=${K} n=${n}`;
        if (wsBytes(tile, c, pairs) > limit) { t.diagnostic(`${what}: over this adapter's workgroup memory, not run`); continue; }
        const qw = q && quantized(rnd, { ...q, K, rows: pairs * n, pre: q.pre ? { rowsPerPart: n } : undefined });
        const w = qw ? qw.w : Float64Array.from({ length: pairs * n * K }, small);
        const x = Float32Array.from({ length: T * K }, small);
        const PAD = 3;
        const y0 = Float32Array.from({ length: (T + PAD) * n }, () => (ep === 'add' ? small() : 0.5));
        dev.pushErrorScope('validation');
        const module = dev.createShaderModule({ code: emulate(sgmatWsShader(ep, c, tile, fmt, prologue, /** @type {'exp' | 'cvt'} */ (q?.unpack ?? 'exp')), c) });
        const pl = dev.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
        const err = await dev.popErrorScope();
        assert.equal(err, null, `${what}: ${err?.message}`);
        const U = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
        const pw = new Uint32Array(12), pf = new Float32Array(pw.buffer);
        if (qw) { pw.set([qw.KU, n, 0, n, K / 4, K, q.bs, qw.nb, 0]); pf[9] = 2 ** (q.bits - 1); pw[10] = q.zp ? 1 : 0; } else pw.set([K / 8, n, 0, n, K / 4]);
        const p = buf(pw, U), st = buf(new Uint32Array([T, 0, 0, T]), U);
        let W;
        if (qw) W = buf(qw.bytes);
        else { const wh = new Uint16Array(w.length + (w.length % 2)); for (let i = 0; i < w.length; i++) wh[i] = half(w[i]); W = buf(wh); }
        const X = buf(x), Y = buf(y0);
        const extra = qw ? [buf(qw.scales), buf(qw.zeros ?? qw.scales), ...(qw.g ? [buf(qw.g)] : [])] : [];
        const read = dev.createBuffer({ size: y0.byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        const bg = dev.createBindGroup({ layout: pl.getBindGroupLayout(0), entries: [p, st, W, X, Y, ...extra].map((buffer, binding) => ({ binding, resource: { buffer } })) });
        const enc = dev.createCommandEncoder();
        const pass = enc.beginComputePass();
        // The grid as layers.ts sizes it from the kernel's dispatch tile (split-K: about SK workgroups per output tile).
        const d = wsDispatchTile(tile, ep);
        pass.setPipeline(pl); pass.setBindGroup(0, bg); pass.dispatchWorkgroups(Math.ceil(T / d.tm), Math.ceil(n / d.rows)); pass.end();
        enc.copyBufferToBuffer(Y, 0, read, 0, y0.byteLength);
        dev.queue.submit([enc.finish()]);
        await read.mapAsync(GPUMapMode.READ);
        const y = new Float32Array(read.getMappedRange().slice(0));
        read.unmap();
        let bad = 0, first;
        for (let tk = 0; tk < T + PAD; tk++) {
          for (let o = 0; o < n; o++) {
            const dot = (qq) => { let s = 0; for (let k = 0; k < K; k++) s += x[tk * K + k] * w[(o + qq * n) * K + k]; return s; };
            const i = tk * n + o;
            const want = tk >= T ? y0[i] : ep === 'swiglu' ? silu(dot(0)) * dot(1) : ep === 'add' ? y0[i] + dot(0) : dot(0);
            const ok = ep === 'swiglu' && tk < T ? Math.abs(y[i] - want) <= 1e-5 * Math.max(1, Math.abs(want)) : y[i] === Math.fround(want);
            if (!ok) { bad++; first ??= { t: tk, o, got: y[i], want }; }
          }
        }
        assert.equal(bad, 0, `${what}: ${bad} outputs wrong (rows past T must stay as they were), first ${JSON.stringify(first)}`);
        for (const b of [p, st, W, X, Y, read, ...extra]) b.destroy();
        ran++;
      }
    }
    assert.ok(ran > 0, 'no case fits this adapter');
  } finally {
    dev.destroy();
    globalThis.keepDawn = gpu;
  }
});
