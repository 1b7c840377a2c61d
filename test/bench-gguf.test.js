// The GGUF writer of the llama.cpp peer (src/bench/gguf.ts): the file's structure, llama.cpp's rotary row
// order for q/k, Q4_0 blocks as ggml's reference quantizer makes them, and (where bench/peers has
// node-llama-cpp installed) llama.cpp itself on the written file giving transformers' greedy tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { permuteRotary, quantizeQ4_0, quantizeQ8_0, writeGguf } from '../dist/bench/gguf.js';
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
