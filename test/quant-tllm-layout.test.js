// The checker: for every --quant scheme (and --kv-cache int8) at tp 1, 2 and 4 — on a model with 2 KV
// heads, so that tp 4 duplicates them — every rank file holds exactly the tensors TensorRT-LLM's LLaMA
// loader takes (name, shape, dtype) per src/sharding/tllm-layout.ts, and config.json's quantization
// is a valid QuantConfig. Rank shapes are derived here independently of tprun's sharding code, from
// TensorRT-LLM's own rules (column linears split N with KV heads duplicated up to tp, row linears split
// K, nothing else split). tp 2 and 4 are made by `convert --format tllm` from the tp 1 checkpoint, so the
// read-back/reshard path is exercised too; then the round trips tprun → tllm → tprun.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { readSafetensors, writeSafetensors, LINEAR_LAYOUT, NORM_LAYOUT, KV_LAYOUT } from 'tprun';
import { QUANT_CONFIG_FIELDS } from '../dist/sharding/tllm-layout.js';
import { must } from './helpers/must.js';

const BROWN = resolve('models/brown-llama-a');
let dir, tiny;

function cli(args) {
  return execa(process.execPath, ['dist/cli.js', ...args], { reject: false, all: true, timeout: 600_000 });
}

/** brown-llama-a cut to 2 layers, 4 query heads and 2 KV heads (heads 0-3 use KV heads 0-1 there too). */
function makeTiny(out) {
  mkdirSync(out, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(BROWN, 'config.json'), 'utf8'));
  const idx = JSON.parse(readFileSync(join(BROWN, 'model.safetensors.index.json'), 'utf8'));
  const all = new Map();
  for (const f of new Set(Object.values(idx.weight_map))) for (const [n, t] of readSafetensors(join(BROWN, f))) all.set(n, t);
  const hs = 32, L = 2;
  const rows = (t, n) => ({ dtype: t.dtype, shape: [n, t.shape[1]], data: t.data.slice(0, n * t.shape[1] * 2) });
  const cols = (t, n) => {
    const [r, c] = t.shape;
    const data = new Uint8Array(r * n * 2);
    for (let i = 0; i < r; i++) data.set(t.data.subarray(i * c * 2, (i * c + n) * 2), i * n * 2);
    return { dtype: t.dtype, shape: [r, n], data };
  };
  const w = new Map();
  for (const [n, t] of all) {
    const m = /^model\.layers\.(\d+)\.(.*)$/.exec(n);
    if (m && +m[1] >= L) continue;
    const role = m?.[2];
    w.set(n, role === 'self_attn.q_proj.weight' ? rows(t, 4 * hs)
      : role === 'self_attn.k_proj.weight' || role === 'self_attn.v_proj.weight' ? rows(t, 2 * hs)
      : role === 'self_attn.o_proj.weight' ? cols(t, 4 * hs) : t);
  }
  writeSafetensors(join(out, 'model.safetensors'), w);
  writeFileSync(join(out, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: L, num_attention_heads: 4, num_key_value_heads: 2, head_dim: hs }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join(BROWN, f), join(out, f));
}

const SCHEMES = [
  { name: 'int8_wo', args: ['--quant', 'int8_wo'], algo: 'W8A16' },
  { name: 'int4_wo', args: ['--quant', 'int4_wo'], algo: 'W4A16_AWQ' },
  { name: 'int4_awq', args: ['--quant', 'int4_awq'], algo: 'W4A16_AWQ' },
  { name: 'w4a8_awq', args: ['--quant', 'w4a8_awq'], algo: 'W4A8_AWQ' },
  { name: 'w8a8_sq', args: ['--quant', 'w8a8_sq'], algo: 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN' },
  { name: 'w8a8_sq per tensor', args: ['--quant', 'w8a8_sq', '--sq-activations', 'per-tensor'], algo: 'W8A8_SQ_PER_CHANNEL' },
  { name: 'w8a8', args: ['--quant', 'w8a8'], algo: 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN' },
  { name: 'fp8 + int8 kv', args: ['--quant', 'fp8', '--kv-cache', 'int8'], algo: 'FP8', kv: 'INT8' },
];
const GROUP = 32; // attention.dense has 128 inputs: 32 per rank at tp 4
const slug = (s) => s.name.replace(/[^a-z0-9]+/g, '_');

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-qlayout-'));
  tiny = join(dir, 'tiny');
  makeTiny(tiny);
}, { timeout: 120_000 });
after(() => rmSync(dir, { recursive: true, force: true }));

/** TensorRT-LLM's per-rank [N, K] of each linear (llama/convert.py: dup_kv_weight, split; RowLinear splits K). */
function rankDims(c, lin, tp) {
  const hs = c.head_size, nh = c.num_attention_heads, kv = c.num_key_value_heads;
  switch (lin) {
    case 'attention.qkv': return { n: (nh / tp + 2 * Math.max(1, kv / tp)) * hs, k: c.hidden_size };
    case 'attention.dense': return { n: c.hidden_size, k: (nh * hs) / tp };
    case 'mlp.fc': case 'mlp.gate': return { n: c.intermediate_size / tp, k: c.hidden_size };
    case 'mlp.proj': return { n: c.hidden_size, k: c.intermediate_size / tp };
    default: throw new Error(`not a linear: ${lin}`);
  }
}
const ROW = new Set(['attention.dense', 'mlp.proj']);

function expectedRank(c, tp) {
  const dt = c.dtype, q = c.quantization, g = q.group_size ?? 128;
  const want = new Map();
  const put = (name, dtype, shape) => want.set(name, { dtype, shape });
  const vocab = Math.ceil(c.vocab_size / tp);
  put('transformer.vocab_embedding.weight', dt, [c.vocab_size, c.hidden_size]);
  put('transformer.ln_f.weight', dt, [c.hidden_size]);
  put('lm_head.weight', dt, [vocab, c.hidden_size]);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const P = `transformer.layers.${l}`;
    for (const norm of ['input_layernorm', 'post_layernorm']) {
      put(`${P}.${norm}.weight`, dt, [c.hidden_size]);
      for (const s of (q.quant_algo && NORM_LAYOUT[q.quant_algo]) || []) put(`${P}.${norm}.${s.role}`, s.dtype === 'model' ? dt : s.dtype, [1]);
    }
    for (const lin of ['attention.qkv', 'attention.dense', 'mlp.fc', 'mlp.gate', 'mlp.proj']) {
      const { n, k } = rankDims(c, lin, tp);
      const specs = q.quant_algo ? LINEAR_LAYOUT[q.quant_algo].filter((s) => !s.rowOnly || ROW.has(lin)) : [];
      if (!specs.some((s) => s.role === 'weight')) put(`${P}.${lin}.weight`, dt, [n, k]);
      for (const s of specs) {
        const shape = s.shape.map((d) => (d === 'N' ? n : d === 'N/2' ? n / 2 : d === 'K' ? k : d === 'K/g' ? k / g : 1));
        put(`${P}.${lin}.${s.role}`, s.dtype === 'model' ? dt : s.dtype, shape);
      }
    }
    if (q.kv_cache_quant_algo) for (const s of KV_LAYOUT[q.kv_cache_quant_algo]) put(`${P}.attention.${s.role}`, s.dtype, [1]);
  }
  return want;
}

function checkCheckpoint(ckpt, tp, scheme) {
  const c = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8'));
  assert.deepEqual(c.mapping, { world_size: tp, tp_size: tp, pp_size: 1 });
  assert.equal(c.quantization.quant_algo, scheme.algo);
  assert.equal(c.quantization.kv_cache_quant_algo, scheme.kv ?? null);
  for (const k of Object.keys(c.quantization)) assert.ok(QUANT_CONFIG_FIELDS.has(k), `quantization.${k} is not a TensorRT-LLM QuantConfig field`);
  const want = expectedRank(c, tp);
  for (let r = 0; r < tp; r++) {
    const got = readSafetensors(join(ckpt, `rank${r}.safetensors`));
    for (const [name, e] of want) {
      const t = got.get(name);
      assert.ok(t, `${scheme.name} tp=${tp} rank ${r}: missing ${name}`);
      assert.equal(t.dtype, e.dtype, `${scheme.name} tp=${tp} rank ${r}: ${name} dtype`);
      assert.deepEqual(t.shape, e.shape, `${scheme.name} tp=${tp} rank ${r}: ${name} shape`);
    }
    const extra = [...got.keys()].filter((n) => !want.has(n));
    assert.deepEqual(extra, [], `${scheme.name} tp=${tp} rank ${r}: tensors TensorRT-LLM would not take`);
  }
  return c;
}

for (const s of SCHEMES) {
  test(`${s.name} (${s.algo}${s.kv ? ` + ${s.kv} KV` : ''}): every rank at tp 1, 2, 4 matches the layout table`, { timeout: 600_000 }, async () => {
    const base = join(dir, `${slug(s)}-tp1`);
    const r = await cli(['convert', '--model', tiny, '--tp', '1', '--group-size', String(GROUP), '--calib-samples', '8', '--out', base, ...s.args]);
    assert.equal(r.exitCode, 0, r.all);
    checkCheckpoint(base, 1, s);
    if (s.algo === 'W4A16_AWQ') {
      // TensorRT-LLM casts these F32 scales to the model dtype (bfloat16 here) at load: they must already
      // be bfloat16 values, so that the cast changes nothing and the weight was rounded against them.
      for (const [n, t] of readSafetensors(join(base, 'rank0.safetensors'))) {
        if (!n.endsWith('.weights_scaling_factor')) continue;
        const u = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length / 4);
        assert.ok(u.every((v) => (v & 0xffff) === 0), `${s.name}: ${n} holds values bfloat16 cannot`);
      }
    }
    for (const tp of [2, 4]) {
      const out = join(dir, `${slug(s)}-tp${tp}`);
      // tp 2 also changes the dtype: model-dtype companions (prequant, scale_to_int) must follow it.
      const rr = await cli(['convert', '--model', base, '--format', 'tllm', '--tp', String(tp), '--out', out, ...(tp === 2 ? ['--dtype', 'float16'] : [])]);
      assert.equal(rr.exitCode, 0, rr.all);
      const c = checkCheckpoint(out, tp, s);
      assert.equal(c.dtype, tp === 2 ? 'float16' : 'bfloat16');
    }
  });
}

function sameFiles(a, b, what) {
  const x = readSafetensors(join(a, 'rank0.safetensors')), y = readSafetensors(join(b, 'rank0.safetensors'));
  assert.deepEqual([...x.keys()].sort(), [...y.keys()].sort(), what);
  for (const [n, t] of x) {
    const u = must(y.get(n), `${what}: ${n}`);
    assert.equal(u.dtype, t.dtype, `${what}: ${n}`);
    assert.deepEqual(u.shape, t.shape, `${what}: ${n}`);
    assert.ok(Buffer.from(u.data).equals(Buffer.from(t.data)), `${what}: ${n} bytes differ`);
  }
}

test('round trip tprun → tllm → tprun: tp 1 → 4 → 1 is bit-exact for every scheme', { timeout: 600_000 }, async () => {
  for (const s of SCHEMES) {
    const back = join(dir, `${slug(s)}-back`);
    const r = await cli(['convert', '--model', join(dir, `${slug(s)}-tp4`), '--format', 'tllm', '--tp', '1', '--out', back]);
    assert.equal(r.exitCode, 0, r.all);
    sameFiles(join(dir, `${slug(s)}-tp1`), back, s.name);
  }
});

test('a TensorRT-LLM checkpoint with a quant_algo tprun cannot run: exit 2 naming it, no output', { timeout: 300_000 }, async () => {
  const src = join(dir, 'gptq');
  mkdirSync(src);
  const base = join(dir, 'int4_awq-tp1');
  const c = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8'));
  writeFileSync(join(src, 'config.json'), JSON.stringify({ ...c, quantization: { ...c.quantization, quant_algo: 'W4A16_GPTQ' } }));
  copyFileSync(join(base, 'rank0.safetensors'), join(src, 'rank0.safetensors'));
  const r = await cli(['convert', '--model', src, '--format', 'tllm', '--tp', '2', '--out', join(dir, 'gptq-out')]);
  assert.equal(r.exitCode, 2, r.all);
  assert.match(r.all, /quant_algo W4A16_GPTQ/);
  const b = await cli(['build', '--checkpoint', src, '--out', join(dir, 'gptq-engine')]);
  assert.equal(b.exitCode, 2, b.all);
  assert.match(b.all, /quant_algo W4A16_GPTQ/);
  assert.throws(() => readFileSync(join(dir, 'gptq-out', 'config.json')));
});

test('a W8A16 checkpoint holding kernel-preprocessed int8 weights (GPU-specific): exit 2 naming the tensor', { timeout: 300_000 }, async () => {
  const base = join(dir, 'int8_wo-tp1');
  const src = join(dir, 'w8a16-int8');
  mkdirSync(src);
  copyFileSync(join(base, 'config.json'), join(src, 'config.json'));
  const w = readSafetensors(join(base, 'rank0.safetensors'));
  const name = 'transformer.layers.0.attention.qkv.weight';
  const [n, k] = must(w.get(name), name).shape;
  // TensorRT-LLM's plugin layout: int8 (K, N), interleaved for the building GPU.
  w.set(name, { dtype: 'int8', shape: [k, n], data: new Uint8Array(n * k) });
  writeSafetensors(join(src, 'rank0.safetensors'), w);
  const r = await cli(['convert', '--model', src, '--format', 'tllm', '--tp', '2', '--out', join(dir, 'w8a16-int8-out')]);
  assert.equal(r.exitCode, 2, r.all);
  assert.match(r.all, /attention\.qkv\.weight is int8\[\d+,\d+\], W8A16 wants bfloat16\[\d+,\d+\].*float weights/);
});

test('engines built from the tp 4 checkpoints (KV heads duplicated, packed qkv cut by heads) score as the tp 1 ones', { timeout: 900_000 }, async (t) => {
  const ppl = async (ckpt, tag) => {
    const eng = join(dir, `${tag}-engine`);
    let r = await cli(['build', '--checkpoint', ckpt, '--out', eng]);
    assert.equal(r.exitCode, 0, r.all);
    r = await cli(['perplexity', '--engine', eng, '--tokenizer', tiny, '--max-tokens', '512', '--json']);
    assert.equal(r.exitCode, 0, r.all);
    return JSON.parse(must(r.stdout.trim().split('\n').pop(), 'the JSON line')).ppl;
  };
  for (const s of SCHEMES.filter((x) => ['int4_awq', 'w4a8_awq', 'w8a8_sq', 'w8a8_sq per tensor'].includes(x.name))) {
    const [one, four] = [await ppl(join(dir, `${slug(s)}-tp1`), `${slug(s)}-1`), await ppl(join(dir, `${slug(s)}-tp4`), `${slug(s)}-4`)];
    t.diagnostic(`${s.name}: tp 1 ${one}, tp 4 ${four}`);
    assert.ok(one > 1 && one < 2000, `${s.name}: perplexity ${one}`);
    // Per-token activation scales see each rank's slice of a row-parallel input: small differences only.
    assert.ok(Math.abs(four / one - 1) < 0.01, `${s.name}: tp 4 ${four} vs tp 1 ${one}`);
  }
});
