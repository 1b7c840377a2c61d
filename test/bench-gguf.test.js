// The GGUF writer of the llama.cpp peer (src/bench/gguf.ts): the file's structure, llama.cpp's rotary row
// order for q/k, Q4_0 blocks as ggml's reference quantizer makes them, and (where bench/peers has
// node-llama-cpp installed) llama.cpp itself on the written file giving transformers' greedy tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { permuteRotary, quantizeQ4_0, quantizeQ6_K, quantizeQ8_0, writeGguf } from '../dist/bench/gguf.js';
import { openHfTensors } from '../dist/checkpoint/hf.js';
import { must } from './helpers/must.js';
import { isInputError } from 'tprun';

const MODEL = new URL('../models/brown-llama-a', import.meta.url).pathname;
const REF = JSON.parse(readFileSync(new URL('../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));
const PEER = new URL('../bench/peers/node_modules/node-llama-cpp/package.json', import.meta.url).pathname;

/** Minimal GGUF reader: key/values and tensor infos (enough to check what the writer wrote). */
function readGguf(buf) {
  let o = 0;
  const u32 = () => { const v = buf.readUInt32LE(o); o += 4; return v; };
  const u64 = () => { const v = Number(buf.readBigUInt64LE(o)); o += 8; return v; };
  const str = () => { const n = u64(); const s = buf.toString('utf8', o, o + n); o += n; return s; };
  const val = (t) => {
    switch (t) {
      case 4: return u32();
      case 5: { const v = buf.readInt32LE(o); o += 4; return v; }
      case 6: { const v = buf.readFloatLE(o); o += 4; return v; }
      case 7: return buf[o++] === 1;
      case 8: return str();
      case 9: { const et = u32(); const n = u64(); return Array.from({ length: n }, () => val(et)); }
      default: throw new Error(`type ${t}`);
    }
  };
  assert.equal(buf.toString('latin1', 0, 4), 'GGUF'); o = 4;
  const version = u32();
  const nt = u64();
  const nkv = u64();
  const kv = {};
  for (let i = 0; i < nkv; i++) { const k = str(); kv[k] = val(u32()); }
  const tensors = [];
  for (let i = 0; i < nt; i++) {
    const name = str(); const nd = u32(); const dims = Array.from({ length: nd }, () => u64());
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  const align = kv['general.alignment'] ?? 32;
  return { version, kv, tensors, dataStart: Math.ceil(o / align) * align };
}

test('GGUF v3 of brown-llama-a: llama metadata, vocabulary, tensor layout, q/k rows in llama.cpp order', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gguf-test-'));
  try {
    const file = join(dir, 'm.gguf');
    const r = writeGguf(MODEL, file, 'f16');
    const buf = readFileSync(file);
    const g = readGguf(buf);
    assert.equal(g.version, 3);
    assert.equal(g.kv['general.architecture'], 'llama');
    assert.equal(g.kv['llama.block_count'], 6);
    assert.equal(g.kv['llama.attention.head_count'], 8);
    assert.equal(g.kv['llama.attention.head_count_kv'], 4);
    assert.equal(g.kv['llama.rope.dimension_count'], 32);
    assert.equal(g.kv['tokenizer.ggml.model'], 'gpt2');
    assert.equal(g.kv['tokenizer.ggml.tokens'].length, 4096);
    assert.equal(g.kv['tokenizer.ggml.tokens'][0], '<|begin_of_text|>');
    assert.equal(g.kv['tokenizer.ggml.token_type'][0], 3);
    assert.equal(g.kv['tokenizer.ggml.bos_token_id'], 0);
    assert.equal(g.tensors.length, r.tensors);
    assert.ok(g.tensors.every((t) => t.offset % 32 === 0));
    const emb = must(g.tensors.find((t) => t.name === 'token_embd.weight'), 'token_embd.weight');
    assert.deepEqual(emb.dims, [256, 4096]); // innermost first: HF [vocab, hidden]
    assert.equal(must(g.tensors.find((t) => t.name === 'blk.0.attn_norm.weight'), 'blk.0.attn_norm.weight').type, 0); // norms F32

    // blk.0.attn_k row 1 (head 0, pair 0, second element) is HF k_proj row 16 (head 0, second half, 0).
    const k = must(g.tensors.find((t) => t.name === 'blk.0.attn_k.weight'), 'blk.0.attn_k.weight');
    assert.equal(k.type, 1);
    const src = openHfTensors(MODEL);
    const hf = new Uint8Array(128 * 256 * 2);
    src.readRows('model.layers.0.self_attn.k_proj.weight', 0, 128, hf, 0);
    src.close();
    const row = (n) => buf.subarray(g.dataStart + k.offset + n * 512, g.dataStart + k.offset + (n + 1) * 512);
    const bf16RowAsF16 = (n) => { const f = new Float32Array(256); const b = new Uint16Array(hf.buffer, n * 512, 256); for (let i = 0; i < 256; i++) f[i] = new Float32Array(new Uint32Array([b[i] << 16]).buffer)[0]; return f; };
    const f16 = (bytes) => Array.from({ length: 256 }, (_, i) => { const h = bytes[2 * i] | (bytes[2 * i + 1] << 8); const e = (h >> 10) & 31; const m = h & 1023; const s = h >> 15 ? -1 : 1; return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15); });
    const close = (a, b) => a.every((x, i) => Math.abs(x - b[i]) <= 1e-3 * Math.max(1, Math.abs(b[i])));
    assert.ok(close(f16(row(1)), Array.from(bf16RowAsF16(16))), 'row 1 = HF row 16');
    assert.ok(close(f16(row(2)), Array.from(bf16RowAsF16(1))), 'row 2 = HF row 1');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('permuteRotary interleaves each head\'s halves', () => {
  const w = Float32Array.from({ length: 8 }, (_, i) => i); // 8 rows of 1: heads 2, head_dim 4
  assert.deepEqual(Array.from(permuteRotary(w, 8, 1, 2)), [0, 2, 1, 3, 4, 6, 5, 7]);
});

test('Q4_0 blocks: f16 scale = signed absmax / -8, nibbles of x[j] and x[j+16]', () => {
  const x = Float32Array.from({ length: 32 }, (_, i) => (i - 8) / 4); // absmax 23/4 at i = 31
  const q = quantizeQ4_0(x);
  assert.equal(q.length, 18);
  const d = -(23 / 4) / 8;
  const h = q[0] | (q[1] << 8);
  assert.equal(h, 0xb9c0); // f16 of -0.71875
  for (let j = 0; j < 16; j++) {
    for (const [i, nib] of [[j, q[2 + j] & 15], [j + 16, q[2 + j] >> 4]]) {
      assert.ok(Math.abs((nib - 8) * d - x[i]) <= Math.abs(d) / 2 + 1e-6, `element ${i}`);
    }
  }
  assert.throws(() => quantizeQ4_0(new Float32Array(31)), /multiple of 32/);
});

test('Q8_0 blocks: f16 scale = absmax / 127, int8 = round(x / d)', () => {
  const x = Float32Array.from({ length: 32 }, (_, i) => (i - 20) / 4); // absmax 5 at i = 0
  const q = quantizeQ8_0(x);
  assert.equal(q.length, 34);
  assert.equal(q[0] | (q[1] << 8), 0x290a); // f16 of 5/127
  const d = 0.03936767578125; // that f16's value
  const qi = new Int8Array(q.buffer, 2, 32);
  assert.equal(qi[0], -127);
  for (let i = 0; i < 32; i++) assert.ok(Math.abs(qi[i] * d - x[i]) <= d / 2 + 1e-6, `element ${i}`);
  assert.throws(() => quantizeQ8_0(new Float32Array(31)), /multiple of 32/);
});

/** ggml's dequantize_row_q6_K, written from its block layout (ql[128], qh[64], int8 scales[16], f16 d). */
function dequantQ6_K(q) {
  const f16 = (h) => { const e = (h >> 10) & 31, m = h & 1023, s = h >> 15 ? -1 : 1; return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15); };
  const out = new Float32Array((q.length / 210) * 256);
  for (let b = 0; b < q.length / 210; b++) {
    const y = b * 210;
    const d = f16(q[y + 208] | (q[y + 209] << 8));
    const sc = new Int8Array(q.buffer, q.byteOffset + y + 192, 16);
    for (let n = 0; n < 256; n += 128) {
      const ql = y + n / 2, qh = y + 128 + n / 4;
      for (let l = 0; l < 32; l++) {
        const is = (n / 16) + (l >> 4);
        const v = [
          ((q[ql + l] & 15) | (((q[qh + l] >> 0) & 3) << 4)) - 32,
          ((q[ql + l + 32] & 15) | (((q[qh + l] >> 2) & 3) << 4)) - 32,
          ((q[ql + l] >> 4) | (((q[qh + l] >> 4) & 3) << 4)) - 32,
          ((q[ql + l + 32] >> 4) | (((q[qh + l] >> 6) & 3) << 4)) - 32,
        ];
        for (let k = 0; k < 4; k++) out[b * 256 + n + l + 32 * k] = d * sc[is + 2 * k] * v[k];
      }
    }
  }
  return out;
}

test('Q6_K blocks (llama-quantize\'s output.weight in a Q4_0 file): 210 bytes per 256 values, each within half a sub-block step', () => {
  const x = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 16) / 8) * (i < 256 ? 1 : 0.01));
  const q = quantizeQ6_K(x);
  assert.equal(q.length, 420);
  const y = dequantQ6_K(q);
  for (let b = 0; b < 2; b++) {
    const d = Math.abs((() => { const h = q[b * 210 + 208] | (q[b * 210 + 209] << 8); const e = (h >> 10) & 31, m = h & 1023; return (1 + m / 1024) * 2 ** (e - 15); })());
    for (let i = 0; i < 256; i++) {
      const sc = Math.abs(new Int8Array(q.buffer, b * 210 + 192, 16)[i >> 4]);
      assert.ok(Math.abs(y[b * 256 + i] - x[b * 256 + i]) <= (d * sc) / 2 + 1e-6, `element ${b * 256 + i}: ${y[b * 256 + i]} vs ${x[b * 256 + i]}`);
    }
  }
  // Relative error of the whole row: 6 bits with a fitted scale per 16 values.
  let num = 0, den = 0;
  for (let i = 0; i < 256; i++) { num += (y[i] - x[i]) ** 2; den += x[i] ** 2; }
  assert.ok(Math.sqrt(num / den) < 0.02, `rel L2 ${Math.sqrt(num / den)}`);
  assert.deepEqual(Array.from(quantizeQ6_K(new Float32Array(256))), new Array(210).fill(0));
  assert.throws(() => quantizeQ6_K(new Float32Array(255)), /multiple of 256/);
});

test('Q4_0 and Q8_0 files type token_embd and output as llama-quantize does (Q4_0 + Q6_K, Q8_0 + Q8_0); F16 files keep F16', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gguf-types-'));
  try {
    const types = (wt) => {
      const file = join(dir, `${wt}.gguf`);
      writeGguf(MODEL, file, wt);
      const g = readGguf(readFileSync(file));
      const t = (n) => must(g.tensors.find((x) => x.name === n), n).type;
      return [t('token_embd.weight'), t('output.weight'), t('blk.0.ffn_down.weight')];
    };
    assert.deepEqual(types('q4_0'), [2, 14, 2]);
    assert.deepEqual(types('q8_0'), [8, 8, 8]);
    assert.deepEqual(types('f16'), [1, 1, 1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('llama.cpp (node-llama-cpp, CPU) on the F16 GGUF gives transformers\' greedy tokens', { skip: existsSync(PEER) ? false : 'bench/peers not installed (cd bench/peers && npm ci --ignore-scripts)', timeout: 600_000 }, async () => {
  const { benchLlamaCpp } = await import('../dist/bench/llama-cpp-peer.js');
  const dir = mkdtempSync(join(tmpdir(), 'gguf-peer-'));
  try {
    const file = join(dir, 'm.gguf');
    writeGguf(MODEL, file, 'f16');
    for (const p of REF.prompts) {
      const r = await benchLlamaCpp({ gguf: file, gpu: false, prompt: p.input_ids, newTokens: p.greedy_new_ids.length, reps: 1, threads: 1 });
      assert.deepEqual(r.greedy_ids, p.greedy_new_ids);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('llama.cpp on the Q4_0 GGUF (Q6_K output): transformers\' first greedy token on every prompt', { skip: existsSync(PEER) ? false : 'bench/peers not installed (cd bench/peers && npm ci --ignore-scripts)', timeout: 600_000 }, async () => {
  const { benchLlamaCpp } = await import('../dist/bench/llama-cpp-peer.js');
  const dir = mkdtempSync(join(tmpdir(), 'gguf-peer-q4-'));
  try {
    const file = join(dir, 'm.gguf');
    writeGguf(MODEL, file, 'q4_0');
    let same = 0;
    for (const p of REF.prompts) {
      const r = await benchLlamaCpp({ gguf: file, gpu: false, prompt: p.input_ids, newTokens: 8, reps: 1, threads: 1 });
      assert.equal(r.greedy_ids[0], p.greedy_new_ids[0]);
      for (let i = 0; i < 8; i++) same += r.greedy_ids[i] === p.greedy_new_ids[i] ? 1 : 0;
    }
    // A mis-packed output tensor gives unrelated tokens; Q4_0 rounding lets a few drift late.
    assert.ok(same >= 0.75 * 8 * REF.prompts.length, `${same} of ${8 * REF.prompts.length} greedy tokens as transformers'`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench generate --peer llama.cpp without node-llama-cpp: one line naming the folder, exit 2, before measuring', async () => {
  const { spawnSync } = await import('node:child_process');
  const cli = new URL('../dist/cli.js', import.meta.url).pathname;
  const r = spawnSync(process.execPath, [cli, 'bench', 'generate', '--engine', '/nonexistent-engine', '--peer', 'llama.cpp'], {
    encoding: 'utf8', env: { ...process.env, TPRUN_PEERS_DIR: '/nonexistent-peers' }, timeout: 60_000,
  });
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /--peer llama\.cpp: node-llama-cpp is not installed in \/nonexistent-peers/);
  assert.equal(r.stdout, '');
});

test('writeGguf refuses a model it cannot write, leaving no file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gguf-bad-'));
  try {
    assert.throws(() => writeGguf(dir, join(dir, 'm.gguf'), 'f16'), (e) => isInputError(e) || /config\.json/.test(String(e)));
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
