// INT8 KV cache around GroupQueryAttention: the cache the runtime holds between steps is int8, updated in
// place, equal to round(float present / scale); attention outputs track the float cache closely.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from '../dist/engine/ort.js'; // telemetry off, as tprun itself loads it
import { Graph, MS } from '../dist/engine/graph.js';
import { WeightFile } from '../dist/engine/weight-file.js';
import { kvPastToFloat, kvPresentToInt8 } from '../dist/engine/onnx-kv-cache.js';

const NH = 4, KVH = 2, HS = 16, CAP = 16, P = 'transformer.layers.0';
function rng(seed) { let s = seed >>> 0; return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; }; }

async function session(int8, scale) {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-kv-'));
  try {
    const wf = new WeightFile('w.bin');
    const g = new Graph('kv', 'float32', wf);
    /** @type {import('tprun').Weights} */
    const weights = new Map([[`${P}.attention.kv_cache_scaling_factor`, { dtype: 'float32', shape: [], data: new Uint8Array(Float32Array.of(scale).buffer) }]]);
    const qkv = g.input('qkv', 'float32', [1, 'seq', (NH + 2 * KVH) * HS]);
    const dims = [1, KVH, CAP, HS];
    const pk = g.input('past_key', int8 ? 'int8' : 'float32', dims);
    const pv = g.input('past_value', int8 ? 'int8' : 'float32', dims);
    const seqlens = g.input('seqlens_k', 'int32', [1]);
    const total = g.input('total_sequence_length', 'int32', []);
    const half = HS / 2;
    const cos = new Float32Array(CAP * half), sin = new Float32Array(CAP * half);
    for (let p = 0; p < CAP; p++) for (let i = 0; i < half; i++) { const a = p / 10000 ** (i / half); cos[p * half + i] = Math.cos(a); sin[p * half + i] = Math.sin(a); }
    const cc = g.constant('cos', 'float32', [CAP, half], new Uint8Array(cos.buffer));
    const sc = g.constant('sin', 'float32', [CAP, half], new Uint8Array(sin.buffer));
    const k = int8 ? kvPastToFloat(g, pk, P, weights) : pk;
    const v = int8 ? kvPastToFloat(g, pv, P, weights) : pv;
    const [attn, prk, prv] = g.node('GroupQueryAttention', [qkv, '', '', k, v, seqlens, total, cc, sc],
      int8 ? 3 : ['attn', 'present_key', 'present_value'],
      { num_heads: NH, kv_num_heads: KVH, scale: { float: 1 / Math.sqrt(HS) }, do_rotary: 1, rotary_interleaved: 0, local_window_size: -1 }, MS);
    if (int8) {
      kvPresentToInt8(g, prk, 'present_key', P, weights);
      kvPresentToInt8(g, prv, 'present_value', P, weights);
      g.node('Identity', [attn], ['attn']);
    }
    g.output('attn', 'float32', [1, 'seq', NH * HS]);
    g.output('present_key', int8 ? 'int8' : 'float32', dims);
    g.output('present_value', int8 ? 'int8' : 'float32', dims);
    await wf.write(join(dir, 'w.bin'));
    writeFileSync(join(dir, 'm.onnx'), g.encode());
    return await ort.InferenceSession.create(join(dir, 'm.onnx'), { intraOpNumThreads: 1 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('int8 KV cache: in-place int8 buffers, prefill then decode, close to the float cache', async () => {
  const r = rng(4);
  const steps = [5, 1, 1, 1, 1]; // prefill of 5 tokens, then 4 decode steps
  const totalTok = steps.reduce((a, b) => a + b, 0);
  const qkvAll = Float32Array.from({ length: totalTok * (NH + 2 * KVH) * HS }, () => r() * 4);
  let amax = 0; for (const x of qkvAll) amax = Math.max(amax, Math.abs(x));
  const scale = (amax * Math.SQRT2) / 127; // pair-norm bound of the rotated keys
  const sF = await session(false, scale), sQ = await session(true, scale);
  const n = KVH * CAP * HS;
  const fk = new ort.Tensor('float32', new Float32Array(n), [1, KVH, CAP, HS]), fv = new ort.Tensor('float32', new Float32Array(n), [1, KVH, CAP, HS]);
  const qk = new ort.Tensor('int8', new Int8Array(n), [1, KVH, CAP, HS]), qv = new ort.Tensor('int8', new Int8Array(n), [1, KVH, CAP, HS]);
  let pos = 0, maxRel = 0;
  for (const s of steps) {
    const w = (NH + 2 * KVH) * HS;
    const feeds = (k, v) => ({
      qkv: new ort.Tensor('float32', qkvAll.slice(pos * w, (pos + s) * w), [1, s, w]),
      past_key: k, past_value: v,
      seqlens_k: new ort.Tensor('int32', Int32Array.of(pos + s - 1), [1]),
      total_sequence_length: new ort.Tensor('int32', Int32Array.of(pos + s), []),
    });
    const of = await sF.run(feeds(fk, fv), { attn: null, present_key: fk, present_value: fv });
    const oq = await sQ.run(feeds(qk, qv), { attn: null, present_key: qk, present_value: qv });
    pos += s;
    // The int8 buffers were written in place and hold round(float cache / scale) for every token so far.
    for (let h = 0; h < KVH; h++) {
      for (let t = 0; t < pos; t++) {
        for (let i = 0; i < HS; i++) {
          const at = (h * CAP + t) * HS + i;
          assert.ok(Math.abs(qk.data[at] - fk.data[at] / scale) <= 0.5 + 1e-3, `key h${h} t${t} i${i}: ${qk.data[at]} vs ${fk.data[at] / scale}`);
          assert.ok(Math.abs(qv.data[at] - fv.data[at] / scale) <= 0.5 + 1e-3);
        }
      }
    }
    let num = 0, den = 0;
    const fa = /** @type {Float32Array} */ (of.attn.data), qa = /** @type {Float32Array} */ (oq.attn.data);
    for (let i = 0; i < fa.length; i++) { num += (fa[i] - qa[i]) ** 2; den += fa[i] ** 2; }
    const rel = Math.sqrt(num / den);
    if (s === 1) { assert.ok(rel > 0, 'decode reads the quantized cache'); maxRel = Math.max(maxRel, rel); }
    else assert.equal(rel, 0, 'a prefill attends over its own float keys/values');
  }
  assert.ok(maxRel < 0.02, `attention error through the int8 cache ${maxRel}`);
  assert.ok(qk.data instanceof Int8Array && qk.data.some((x) => x !== 0));
  await sF.release(); await sQ.release();
});
