import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeE4M3, decodeE4M3, quantizeFp8, dequantizeFp8, quantizeInt8PerChannel, dequantizeInt8PerChannel,
  quantizeInt4Grouped, dequantizeInt4Grouped, smoothingFactors, awqQuantize,
} from 'tprun';
import { unpackInt4 } from '../dist/quantization/weights.js';
import { scaleColumns } from '../dist/quantization/smoothquant.js';
import { matmulNT } from '../dist/quantization/linalg.js';

function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32; };
}
function randn(r) { return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()); }

// Reference: the nearest of all 254 finite e4m3fn values, ties to the even code; saturation at ±448.
const FINITE = [];
for (let c = 0; c < 256; c++) if ((c & 0x7f) !== 0x7f) FINITE.push(c);
function refEncode(x) {
  if (Number.isNaN(x)) return 0x7f;
  const v = Math.max(-448, Math.min(448, x));
  let best = null, bestD = Infinity;
  for (const c of FINITE) {
    const d = Math.abs(decodeE4M3(c) - v);
    if (d < bestD || (d === bestD && (c & 1) === 0 && (best & 1) === 1)) { best = c; bestD = d; }
  }
  if (decodeE4M3(best) === 0) return v < 0 || Object.is(v, -0) ? 0x80 : 0;
  return best;
}

test('fp8 e4m3fn: every code decodes and re-encodes to itself', () => {
  for (let c = 0; c < 256; c++) {
    if ((c & 0x7f) === 0x7f) { assert.ok(Number.isNaN(decodeE4M3(c))); continue; }
    assert.equal(encodeE4M3(decodeE4M3(c)), c, `code ${c}`);
  }
  assert.equal(decodeE4M3(0x7e), 448);
  assert.equal(decodeE4M3(0x01), 2 ** -9);
});

test('fp8 e4m3fn: rounding to nearest even and saturation match a brute-force reference', () => {
  const r = rng(7);
  const probes = [448, 449, 463.9, 464, 465, 1e6, -1e6, Infinity, -Infinity, 2 ** -10, 3 * 2 ** -11, 2 ** -6 - 2 ** -11];
  // Midpoints between neighbours exercise the tie rule.
  for (let c = 0; c < 0x7e; c++) probes.push((decodeE4M3(c) + decodeE4M3(c + 1)) / 2, -(decodeE4M3(c) + decodeE4M3(c + 1)) / 2);
  for (let i = 0; i < 3000; i++) probes.push(randn(r) * 2 ** Math.floor(r() * 24 - 12));
  for (const x of probes) assert.equal(encodeE4M3(x), refEncode(x), `x=${x}`);
  assert.equal(encodeE4M3(500, false), 0x7f, 'no saturation: overflow is NaN');
  assert.equal(encodeE4M3(NaN), 0x7f);
});

test('fp8 per-tensor scale: absmax maps to 448 and the relative error stays under 2^-4', () => {
  const r = rng(3);
  const x = Float32Array.from({ length: 4096 }, () => randn(r) * 0.02);
  const q = quantizeFp8(x);
  const y = dequantizeFp8(q.codes, q.scale);
  let amax = 0; for (const v of x) amax = Math.max(amax, Math.abs(v));
  assert.equal(Math.max(...y.map(Math.abs)), Math.fround(Math.fround(amax / 448) * 448));
  for (let i = 0; i < x.length; i++) {
    if (Math.abs(x[i]) > q.scale * 2 ** -6) assert.ok(Math.abs(y[i] - x[i]) <= Math.abs(x[i]) * 2 ** -4 + 1e-12, `${x[i]} -> ${y[i]}`);
  }
});

test('int8 per-channel: symmetric range, round trip within half a step', () => {
  const r = rng(11);
  const n = 17, k = 40;
  const w = Float32Array.from({ length: n * k }, () => randn(r));
  const q = quantizeInt8PerChannel(w, n, k);
  const y = dequantizeInt8PerChannel(q, n, k);
  for (let row = 0; row < n; row++) {
    let hit = false;
    for (let c = 0; c < k; c++) {
      const v = q.q[row * k + c];
      assert.ok(v >= -127 && v <= 127);
      hit ||= Math.abs(v) === 127;
      assert.ok(Math.abs(y[row * k + c] - w[row * k + c]) <= q.scale[row] / 2 * (1 + 1e-6));
    }
    assert.ok(hit, 'the row absmax maps to ±127');
  }
});

test('int4 group-wise: MatMulNBits nibble order (low nibble = even k, value q+8), exact round trip of grid values', () => {
  const n = 3, k = 32, g = 16;
  // Weights already on the int4 grid with scale 0.5 per group (absmax 7*0.5 present in every group).
  const r = rng(5);
  const ints = Int8Array.from({ length: n * k }, (_, i) => (i % g === 0 ? 7 : Math.floor(r() * 15) - 7));
  const w = Float32Array.from(ints, (v) => v * 0.5);
  const q = quantizeInt4Grouped(w, n, k, g);
  assert.equal(q.packed.length, n * k / 2);
  assert.deepEqual([...q.scale], new Array(n * k / g).fill(0.5));
  for (let i = 0; i < n * k; i += 2) {
    assert.equal(q.packed[i / 2] & 15, ints[i] + 8, `even k=${i} in the low nibble`);
    assert.equal(q.packed[i / 2] >> 4, ints[i + 1] + 8);
  }
  assert.deepEqual([...unpackInt4(q.packed, n * k)], [...ints]);
  assert.deepEqual([...dequantizeInt4Grouped(q, n, k, g)], [...w]);
  assert.throws(() => quantizeInt4Grouped(w, n, k, 24), /multiple of the group size/);
});

test('SmoothQuant factors: s = max|X|^a / max|W|^(1-a); smoothing is exact in float', () => {
  const n = 4, k = 3;
  const w = Float32Array.from([1, -2, 0.5, 0.25, 4, -1, 1, 1, 1, -1, 0, 2]);
  const xmax = Float32Array.from([16, 1, 4]);
  const s = smoothingFactors(xmax, w, n, k, 0.5);
  assert.ok(Math.abs(s[0] - 4 / 1) < 1e-6 && Math.abs(s[1] - 1 / 2) < 1e-6 && Math.abs(s[2] - 2 / Math.SQRT2) < 1e-6);
  const x = Float32Array.from([1, 2, 3, -4, 5, -6]);
  const xs = x.map((v, i) => v / s[i % k]);
  const y0 = matmulNT(x, 2, w, n, k), y1 = matmulNT(xs, 2, scaleColumns(w, n, k, s), n, k);
  for (let i = 0; i < y0.length; i++) assert.ok(Math.abs(y0[i] - y1[i]) < 1e-5);
});

test('AWQ: the searched scales lower the output error below round-to-nearest on outlier activations', async () => {
  const r = rng(9);
  const n = 32, k = 64, g = 32, t = 128;
  const w = Float32Array.from({ length: n * k }, () => randn(r));
  const chanScale = Float32Array.from({ length: k }, (_, c) => (c % 9 === 0 ? 20 : 1));
  const x = Float32Array.from({ length: t * k }, (_, i) => randn(r) * chanScale[i % k]);
  const mean = new Float32Array(k);
  for (let i = 0; i < t * k; i++) mean[i % k] += Math.abs(x[i]) / t;
  const res = await awqQuantize(w, n, k, g, mean, { x, rows: t }, { grid: 10, clipSearch: true });
  assert.ok(res.alpha > 0, 'a non-trivial scale was chosen');
  assert.ok(res.error < res.rtnError * 0.9, `awq ${res.error} vs rtn ${res.rtnError}`);
});

test('AWQ with a stored dtype: the prequant factor is what the dtype holds, and the weight is quantized against exactly it', async () => {
  const r = rng(11);
  const n = 16, k = 64, g = 32, t = 96;
  const w = Float32Array.from({ length: n * k }, () => randn(r));
  const chanScale = Float32Array.from({ length: k }, (_, c) => (c % 7 === 0 ? 15 : 1));
  const x = Float32Array.from({ length: t * k }, (_, i) => randn(r) * chanScale[i % k]);
  const mean = new Float32Array(k);
  for (let i = 0; i < t * k; i++) mean[i % k] += Math.abs(x[i]) / t;
  // bfloat16 storage: round to nearest even on the top 16 bits of the float32.
  const bf16 = (v) => { const u = new Uint32Array(Float32Array.from(v).buffer); for (let i = 0; i < u.length; i++) u[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) << 16; return new Float32Array(u.buffer); };
  const res = await awqQuantize(w, n, k, g, mean, { x, rows: t }, { grid: 10, clipSearch: true, store: bf16 });
  assert.ok(res.alpha > 0 || res.prequant.some((v) => v !== 1), 'a non-trivial scale was chosen');
  assert.deepEqual([...bf16(res.prequant)], [...res.prequant], 'prequant values are bfloat16-exact');
  for (let c = 0; c < k; c++) assert.equal(res.s[c], Math.fround(1 / res.prequant[c]));
  const again = quantizeInt4Grouped(scaleColumns(w, n, k, res.s), n, k, g, res.clip);
  assert.deepEqual(Buffer.from(res.packed), Buffer.from(again.packed), 'weights quantized against the stored factor');
  assert.ok(res.error < res.rtnError, `awq ${res.error} vs rtn ${res.rtnError}`);
});
