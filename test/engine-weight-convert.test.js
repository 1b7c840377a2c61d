// Engine weight conversion (bf16/fp16/fp32 → the engine dtype, plain and transposed) and the streaming
// weight-file writer: bytes equal to the reference float path (toFloat32 → transpose2d → fromFloat32)
// for every 16-bit bit pattern, in chunks of any row range, with SIMD on and off.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineWeight, engineWeightTransposed, materialize, useSimd } from '../dist/engine/weight-convert.js';
import { toFloat32 } from 'tprun';
import { fromFloat32, transpose2d } from '../dist/engine/dtype.js';
import { WeightFile, WEIGHT_ALIGN } from '../dist/engine/weight-file.js';
import { poolStats } from '../dist/engine/transpose-pool.js';

function tensorOf(dtype, shape, words) {
  const data = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  return { dtype, shape, data };
}

/** Every 16-bit pattern, in a [rows, cols] tensor (patterns repeat when rows*cols > 65536). */
function allPatterns(dtype, rows, cols, shift = 0) {
  const w = new Uint16Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = (i * 40503 + shift) & 0xffff;
  return tensorOf(dtype, [rows, cols], w);
}

function f32Specials(rows, cols) {
  const f = new Float32Array(rows * cols);
  const special = [0, -0, 1, -1, 65504, 65520, -65520, 1e5, -1e5, Infinity, -Infinity, NaN, 6e-8, 3e-8, 2.9e-8, 1e-45, -6.1e-5, 5.96e-8, 0.1, 1 / 3];
  for (let i = 0; i < f.length; i++) f[i] = i < special.length ? special[i] : Math.sin(i) * 10 ** ((i % 13) - 8);
  return tensorOf('float32', [rows, cols], f);
}

const reference = (t, dt) => fromFloat32(toFloat32(t), t.shape, dt).data;
const referenceT = (t, dt) => fromFloat32(transpose2d(toFloat32(t), t.shape[0], t.shape[1]), [t.shape[1], t.shape[0]], dt).data;

/** Fills a deferred tensor in the given row cuts (like the weight file's chunks do). */
function fillInCuts(d, cuts) {
  const out = new Uint8Array(d.byteLength);
  const rowBytes = d.byteLength / d.shape[0];
  for (let i = 0; i + 1 < cuts.length; i++) d.fill(out.subarray(cuts[i] * rowBytes, cuts[i + 1] * rowBytes), cuts[i], cuts[i + 1]);
  return out;
}

const firstDiff = (a, b) => { for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i; return -1; };

for (const simd of [true, false]) {
  test(`every bf16/fp16 pattern converts as the reference path (simd ${simd ? 'on' : 'off'})`, () => {
    useSimd(simd);
    for (const src of ['bfloat16', 'float16']) {
      for (const dt of /** @type {const} */ (['float16', 'float32'])) {
        for (const [rows, cols] of [[256, 256], [37, 41], [8, 8200], [16, 5]]) {
          const t = allPatterns(src, rows, cols, rows);
          const plain = materialize(engineWeight(t, dt)).data;
          assert.equal(firstDiff(plain, reference(t, dt)), -1, `${src}→${dt} [${rows}, ${cols}] plain`);
          const dT = engineWeightTransposed(t, dt);
          assert.deepEqual(dT.shape, [cols, rows]);
          const ref = referenceT(t, dt);
          for (const cuts of [[0, cols], [0, 5, Math.min(77, cols), cols], [0, Math.min(8, cols), Math.min(24, cols), cols]]) {
            const got = fillInCuts(dT, [...new Set(cuts)]);
            assert.equal(firstDiff(got, ref), -1, `${src}→${dt} [${rows}, ${cols}] transposed, cuts ${cuts}`);
          }
        }
      }
    }
  });
}

test('float32 sources: rounding, overflow to infinity, NaN, subnormals as the reference path', () => {
  for (const simd of [true, false]) {
    useSimd(simd);
    const t = f32Specials(24, 40);
    for (const dt of /** @type {const} */ (['float16', 'float32'])) {
      assert.equal(firstDiff(materialize(engineWeight(t, dt)).data, reference(t, dt)), -1, `plain ${dt}`);
      assert.equal(firstDiff(fillInCuts(engineWeightTransposed(t, dt), [0, 3, 40]), referenceT(t, dt)), -1, `transposed ${dt}`);
    }
  }
  useSimd(true);
});

test('a non-float weight is refused naming the tensor', () => {
  /** @type {import('tprun').Tensor} */
  const t = { dtype: 'int8', shape: [4, 4], data: new Uint8Array(16) };
  assert.throws(() => engineWeightTransposed(t, 'float16', 'tensor lm_head.weight'), /tensor lm_head\.weight: cannot convert int8/);
});

test('weight file: tensors at 64 KiB offsets, zero padding, CRC-32 of the whole file (inline, one worker, chunks on three workers joined)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wf-'));
  try {
    for (const opts of [{}, { chunkBytes: 4096, workerHashMin: 0 }, { chunkBytes: 70000, workerHashMin: 0 }, { chunkBytes: 70000, workerHashMin: 0, hashThreads: 3 }]) {
      const wf = new WeightFile('weights.bin');
      const a = allPatterns('bfloat16', 300, 130);
      const plain = new Uint8Array(100_003).map((_, i) => (i * 7) & 255);
      const big = allPatterns('float16', 64, 3000, 5); // rows larger than the smallest chunk
      const b16 = allPatterns('bfloat16', 520, 128, 7);
      const f16 = allPatterns('float16', 520, 128, 8);
      const refs = [
        wf.add('a', engineWeightTransposed(a, 'float16')),
        wf.add('plain', plain),
        wf.add('a', engineWeightTransposed(a, 'float16')), // a name is stored once
        wf.add('big', engineWeight(big, 'float32')),
        wf.add('empty', new Uint8Array(0)),
        // 16-bit to float16 untransposed: read into the chunk and converted there, in place.
        wf.add('bf16', engineWeight(b16, 'float16')),
        wf.add('f16', engineWeight(f16, 'float16')),
      ];
      assert.deepEqual(refs[0], refs[2]);
      const expect = new Uint8Array(wf.size);
      expect.set(referenceT(a, 'float16'), refs[0].offset);
      expect.set(plain, refs[1].offset);
      expect.set(reference(big, 'float32'), refs[3].offset);
      expect.set(reference(b16, 'float16'), refs[5].offset);
      expect.set(reference(f16, 'float16'), refs[6].offset);
      for (const r of refs) assert.equal(r.offset % WEIGHT_ALIGN, 0);
      const file = join(dir, 'weights.bin');
      const sum = await wf.write(file, opts);
      const got = readFileSync(file);
      assert.equal(got.length, wf.size);
      assert.equal(firstDiff(got, expect), -1, JSON.stringify(opts));
      assert.equal(sum, (crc32(expect) >>> 0).toString(16).padStart(8, '0'), JSON.stringify(opts));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('transposes shared with worker threads (TPRUN_BUILD_THREADS) write the same bytes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wf-pool-'));
  const saved = process.env.TPRUN_BUILD_THREADS;
  process.env.TPRUN_BUILD_THREADS = '3';
  try {
    useSimd(true);
    // Rows a multiple of 32 (the 4-tile kernel) and of 8 only (the 1-tile one); every bit pattern, so
    // tiles with lanes out of the arithmetic range go through the table on the worker threads too.
    const a = allPatterns('bfloat16', 1024, 2048, 1);
    const b = allPatterns('float16', 1032, 2048, 2);
    for (const opts of [{}, { chunkBytes: 3 << 20 }]) {
      const before = poolStats.splitChunks;
      const wf = new WeightFile('weights.bin');
      const ra = wf.add('a', engineWeightTransposed(a, 'float16'));
      const rb = wf.add('b', engineWeightTransposed(b, 'float16'));
      const expect = new Uint8Array(wf.size);
      expect.set(referenceT(a, 'float16'), ra.offset);
      expect.set(referenceT(b, 'float16'), rb.offset);
      const file = join(dir, 'weights.bin');
      const sum = await wf.write(file, opts);
      assert.ok(poolStats.splitChunks > before, `the pool took part (${JSON.stringify(opts)})`);
      assert.equal(firstDiff(readFileSync(file), expect), -1, JSON.stringify(opts));
      assert.equal(sum, (crc32(expect) >>> 0).toString(16).padStart(8, '0'));
    }
  } finally {
    if (saved === undefined) delete process.env.TPRUN_BUILD_THREADS;
    else process.env.TPRUN_BUILD_THREADS = saved;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lazily read tensors (build --model) are read once, from the checkpoint, and convert like loaded ones', () => {
  for (const simd of [true, false]) {
    useSimd(simd);
    for (const [src, dt] of /** @type {const} */ ([['bfloat16', 'float16'], ['float16', 'float16'], ['bfloat16', 'float32'], ['float32', 'float16']])) {
      const t = src === 'float32' ? f32Specials(64, 48) : allPatterns(src, 64, 48, 3);
      const rowBytes = t.data.length / t.shape[0];
      let wholeReads = 0;
      const lazy = (u) => ({
        dtype: u.dtype, shape: u.shape,
        get data() { wholeReads++; return u.data.slice(); },
        readRows(r0, r1, dest) { dest.set(u.data.subarray(r0 * rowBytes, r1 * rowBytes)); },
      });
      assert.equal(firstDiff(materialize(engineWeight(lazy(t), dt)).data, reference(t, dt)), -1, `${src}→${dt} plain`);
      assert.equal(firstDiff(fillInCuts(engineWeightTransposed(lazy(t), dt), [0, 16, 40, 48]), referenceT(t, dt)), -1, `${src}→${dt} transposed`);
      // A tensor is read whole at most once per conversion (the JavaScript paths), not once per chunk.
      assert.ok(wholeReads <= 2, `${src}→${dt}: ${wholeReads} whole reads`);
      if (simd && src !== 'float32' && dt === 'float16') assert.equal(wholeReads, 0, `${src}→${dt}: the SIMD path reads rows into its arena`);
    }
  }
  useSimd(true);
});

test('SIMD map: rounds of four in-range vectors, a lane out of range at every position, tails, in place', async () => {
  const { chunkBuffers } = await import('../dist/engine/weight-convert.js');
  // In range: bf16 exponents 118..121 (float16 normals), float16 finite non-NaN; out: specials of each kind.
  const inRange = { bfloat16: (i) => ((i * 7919) & 0x807f) | ((118 + (i % 4)) << 7), float16: (i) => (i * 7919) & 0x7bff };
  const specials = { bfloat16: [0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0x0001, 0x3800, 0x4780, 0x477f], float16: [0x7c00, 0xfc00, 0x7e01, 0xfd00, 0x0000, 0x0001] };
  const { bufs: [inside], release } = chunkBuffers(1, 2 * 8 * 40);
  try {
    for (const dtype of ['bfloat16', 'float16']) {
      for (let k = 8; k <= 40; k++) {
        const n = 8 * k;
        // One clean case (every round takes the arithmetic branch), then a special lane at each of a round's 32 positions.
        for (let p = -1; p < 32; p++) {
          const w = new Uint16Array(n);
          for (let i = 0; i < n; i++) w[i] = inRange[dtype](i + k);
          if (p >= 0) for (let i = p; i < n; i += 32) w[i] = specials[dtype][(i + k) % specials[dtype].length];
          const t = tensorOf(dtype, [1, n], w);
          useSimd(false);
          const want = materialize(engineWeight(t, 'float16')).data;
          useSimd(true);
          const got = materialize(engineWeight(t, 'float16')).data;
          assert.deepEqual(got, want, `${dtype} n=${n} special at ${p}`);
          // Converted in place inside the SIMD memory (the destination is where the source is staged).
          const d = inside.subarray(0, 2 * n);
          engineWeight(t, 'float16').fill(d, 0, 1);
          assert.deepEqual(new Uint8Array(d), want, `${dtype} n=${n} special at ${p}, in place`);
        }
      }
    }
  } finally {
    useSimd(true);
    release();
  }
});
