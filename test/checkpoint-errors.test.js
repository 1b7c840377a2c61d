// Bad input: each case gives one clean line naming the file / tensor / option, exit code 2 from the
// CLI, and no output directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { SafetensorsFile, writeSafetensors, LlamaForCausalLM, castTensor, isInputError } from 'tprun';
import { ROOT, BROWN, tmpDir } from './helpers/h3.js';

const CLI = path.join(ROOT, 'dist/cli.js');

function rawFile(file, header, data = Buffer.alloc(0), lenOverride) {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const p = Buffer.alloc(8);
  p.writeBigUInt64LE(BigInt(lenOverride ?? h.length));
  fs.writeFileSync(file, Buffer.concat([p, h, data]));
  return file;
}

test('safetensors header validation names file and tensor', (t) => {
  const d = tmpDir(t);
  const f = path.join(d, 'x.safetensors');
  const ok = { a: { dtype: 'BF16', shape: [2, 2], data_offsets: [0, 8] } };
  /** @type {[() => void, RegExp][]} */
  const cases = [
    [() => fs.writeFileSync(f, Buffer.alloc(3)), /truncated \(3 bytes/],
    [() => rawFile(f, ok, Buffer.alloc(8), 1000), /header length 1000 runs past the end/],
    [() => rawFile(f, '{"a": {', Buffer.alloc(8)), /malformed header JSON/],
    [() => rawFile(f, { a: { ...ok.a, dtype: 'Q4' } }, Buffer.alloc(8)), /tensor a: unknown dtype "Q4"/],
    [() => rawFile(f, ok, Buffer.alloc(4)), /tensor a: data_offsets \[0, 8\] out of range/],
    [() => rawFile(f, { a: ok.a, b: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } }, Buffer.alloc(8)), /tensor b overlaps tensor a|tensor a overlaps tensor b/],
    [() => rawFile(f, { a: { ...ok.a, shape: [2, 3] } }, Buffer.alloc(8)), /tensor a: shape \[2, 3\] BF16 needs 12 bytes but data_offsets span 8/],
    [() => rawFile(f, { a: { ...ok.a, data_offsets: [8, 0] } }, Buffer.alloc(8)), /tensor a: data_offsets \[8, 0\] are reversed/],
    [() => rawFile(f, { a: { ...ok.a, shape: [-2, -2] } }, Buffer.alloc(8)), /tensor a: shape is not a list/],
  ];
  for (const [make, re] of cases) {
    make();
    assert.throws(() => SafetensorsFile.open(f).close(), (e) => {
      assert.ok(isInputError(e), String(e));
      assert.ok(e.message.startsWith(`${f}: `), e.message);
      assert.match(e.message, re);
      return true;
    });
  }
  rawFile(f, ok, Buffer.alloc(8));
  SafetensorsFile.open(f).close();
});

function copyBrown(t) {
  const d = path.join(tmpDir(t), 'model');
  fs.mkdirSync(d);
  for (const f of fs.readdirSync(BROWN)) fs.copyFileSync(path.join(BROWN, f), path.join(d, f));
  return d;
}

function cli(args) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, err: r.stderr.trim() };
}

test('tprun convert: bad input exits 2 with one line and leaves no output', (t) => {
  const work = tmpDir(t);
  const out = path.join(work, 'out');
  const editConfig = (d, f) => {
    const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
    f(c);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
  };
  /** @type {[string, () => string, string[], RegExp][]} */
  const cases = [
    ['missing directory', () => path.join(work, 'nope'), [], /--model .*nope: no such directory/],
    ['tp does not divide heads', () => BROWN, ['--tp', '3'], /--tp 3 does not divide num_attention_heads=8/],
    ['unsupported architecture', () => { const d = copyBrown(t); editConfig(d, (c) => { c.architectures = ['MistralForCausalLM']; }); return d; }, [], /config\.json: unsupported architecture MistralForCausalLM/],
    ['shape disagrees with config', () => { const d = copyBrown(t); editConfig(d, (c) => { c.intermediate_size = 1024; }); return d; }, [], /model-0000\d-of-00002\.safetensors: tensor model\.layers\.0\.mlp\.\w+_proj\.weight: shape \[\d+, \d+\] disagrees with config\.json/],
    ['missing tensor', () => {
      const d = copyBrown(t);
      const idx = JSON.parse(fs.readFileSync(path.join(d, 'model.safetensors.index.json'), 'utf8'));
      delete idx.weight_map['model.layers.2.self_attn.k_proj.weight'];
      fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify(idx));
      return d;
    }, [], /missing tensor model\.layers\.2\.self_attn\.k_proj\.weight/],
    ['truncated shard', () => {
      const d = copyBrown(t);
      const f = path.join(d, 'model-00002-of-00002.safetensors');
      fs.truncateSync(f, fs.statSync(f).size - 1000);
      return d;
    }, [], /model-00002-of-00002\.safetensors: tensor \S+: data_offsets .* out of range/],
    ['bad --pp (more stages than layers)', () => BROWN, ['--pp', '7'], /--pp 7: more pipeline stages than the model's 6 layers/],
    ['not a checkpoint', () => work, [], /not a Hugging Face .* Meta .* TensorRT-LLM/],
  ];
  for (const [what, mk, extra, re] of cases) {
    const model = mk();
    const r = cli(['convert', '--model', model, '--out', out, ...extra]);
    assert.equal(r.code, 2, `${what}: exit ${r.code}: ${r.err}`);
    assert.equal(r.err.split('\n').length, 1, `${what}: ${r.err}`);
    assert.match(r.err, re, what);
    assert.deepEqual(fs.readdirSync(work).filter((f) => f.includes('out')), [], what);
  }
});

test('float16: values beyond range are an error unless clamped; rounding is to nearest even', () => {
  /** @type {(bits: number[]) => import('tprun').Tensor} */
  const bf = (bits) => ({ dtype: 'bfloat16', shape: [bits.length], data: new Uint8Array(Uint16Array.from(bits).buffer) });
  // bf16 0x4780 = 65536 > 65504: error; clamp gives 0x7bff.
  assert.throws(() => castTensor(bf([0x3f80, 0x4780]), 'float16', { what: 'x.safetensors: tensor w' }),
    /x\.safetensors: tensor w: value 65536 at index 1 is beyond float16's range/);
  const c = castTensor(bf([0x3f80, 0x4780, 0xc780]), 'float16', { clamp: true });
  assert.deepEqual([...new Uint16Array(c.data.buffer)], [0x3c00, 0x7bff, 0xfbff]);
  // Exhaustive over all finite bf16 within fp16 range: fp16 result equals the correctly rounded value.
  const all = [];
  for (let b = 0; b < 0x10000; b++) {
    const e = (b >> 7) & 0xff;
    if (e === 0xff) continue;
    const v = new Float32Array(new Uint32Array([b << 16]).buffer)[0];
    if (Math.abs(v) <= 65504) all.push(b);
  }
  const h = new Uint16Array(castTensor(bf(all), 'float16').data.buffer);
  const back = new Float32Array(castTensor({ dtype: 'float16', shape: [h.length], data: new Uint8Array(h.buffer) }, 'float32').data.buffer);
  const f16val = (x) => new Float32Array(castTensor({ dtype: 'float16', shape: [1], data: new Uint8Array(Uint16Array.of(x).buffer) }, 'float32').data.buffer)[0];
  for (let i = 0; i < all.length; i++) {
    const v = new Float32Array(new Uint32Array([all[i] << 16]).buffer)[0];
    const got = back[i];
    // Neighbours of the result in fp16 must not be closer; ties go to the even mantissa.
    const up = f16val(h[i] + 1), down = f16val(h[i] - 1);
    const err = Math.abs(got - v);
    if (Number.isFinite(up)) assert.ok(Math.abs(up - v) >= err, `bf16 0x${all[i].toString(16)}`);
    if (Number.isFinite(down) && (h[i] & 0x7fff) !== 0) assert.ok(Math.abs(down - v) >= err, `bf16 0x${all[i].toString(16)}`);
    if (Math.abs(up - v) === err || Math.abs(down - v) === err) assert.equal(h[i] & 1, 0, `tie to even 0x${all[i].toString(16)}`);
  }
});

test('a failure while ranks write leaves no output directory', async (t) => {
  const { convertRank } = await import('../dist/checkpoint/convert.js');
  const { initWorld } = await import('../dist/rank/world.js');
  const d = copyBrown(t);
  // One huge value in a bf16 weight: converting to float16 fails mid-stream, after files were opened.
  const f = path.join(d, 'model-00002-of-00002.safetensors');
  const sf = SafetensorsFile.open(f);
  const info = sf.info('lm_head.weight');
  sf.close();
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, Buffer.from([0x80, 0x47]), 0, 2, info.offset + 100);
  fs.closeSync(fd);
  const out = path.join(path.dirname(d), 'out');
  const world = await initWorld({ env: {} });
  await assert.rejects(convertRank(world, { model: d, out, tp: 1, dtype: 'float16' }), /tensor lm_head\.weight: value 65536 .* beyond float16's range/);
  await world.close();
  assert.deepEqual(fs.readdirSync(path.dirname(d)), ['model']);
  // With --clamp it goes through and the directory appears complete.
  const w2 = await initWorld({ env: {} });
  await convertRank(w2, { model: d, out, tp: 1, dtype: 'float16', clamp: true });
  await w2.close();
  assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'rank0.safetensors']);
  assert.deepEqual(fs.readdirSync(path.dirname(d)).sort(), ['model', 'out']);
  const m = LlamaForCausalLM.fromCheckpoint(out, 0);
  assert.equal(m.config.dtype, 'float16');
  assert.equal(new Uint16Array(m.tensor('lm_head.weight').data.slice(100, 102).buffer)[0], 0x7bff);
});

test('a rank stopped by SIGTERM (how the launcher ends a job when another rank dies) removes its temp dir', async (t) => {
  const work = tmpDir(t);
  const tmp = path.join(work, '.out.tmp-x');
  const script = `import { openTemp } from ${JSON.stringify(path.join(ROOT, 'dist/checkpoint/outdir.js'))};
    import fs from 'node:fs';
    openTemp(${JSON.stringify(tmp)});
    fs.writeFileSync(${JSON.stringify(path.join(tmp, 'rank0.safetensors'))}, 'partial');
    process.stdout.write('ready\\n');
    setInterval(() => {}, 1000);`;
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  assert.ok(fs.existsSync(tmp));
  child.kill('SIGTERM');
  // After removing the temp dir the signal has its default effect (the process dies of it, as without tprun).
  const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  assert.equal(signal, 'SIGTERM', `exit ${code}`);
  assert.deepEqual(fs.readdirSync(work), []);
});

test('a TensorRT-LLM checkpoint whose shard disagrees with its config: clear error naming file and tensor', (t) => {
  const dir = path.join(tmpDir(t), 'ckpt');
  for (let rank = 0; rank < 2; rank++) LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 2 }, rank }).saveCheckpoint(dir);
  const full = LlamaForCausalLM.fromHuggingFace(BROWN);
  const bad = LlamaForCausalLM.fromCheckpoint(dir, 1).weights;
  bad.set('transformer.layers.0.mlp.fc.weight', full.tensor('transformer.layers.0.mlp.fc.weight'));
  const file = path.join(dir, 'rank1.safetensors');
  writeSafetensors(file, bad);
  const anchored = (re) => (e) => re.test(e.message);
  assert.throws(() => LlamaForCausalLM.fromCheckpoint(dir, 1),
    anchored(new RegExp(`^${file.replace(/[.]/g, '\\.')}: tensor transformer\\.layers\\.0\\.mlp\\.fc\\.weight has shape \\[768, 256\\], expected \\[384, 256\\] for rank 1 of tp=2$`)));
  assert.throws(() => LlamaForCausalLM.fromCheckpoint(dir, 0, { mapping: { tp_size: 4 } }),
    /tensor transformer\.layers\.0\.mlp\.fc\.weight: rank 1 shard is bfloat16\[768,256\], expected bfloat16\[384,256\]/);
  bad.delete('transformer.ln_f.weight');
  writeSafetensors(file, bad);
  assert.throws(() => LlamaForCausalLM.fromCheckpoint(dir, 1), /rank1\.safetensors: missing tensor transformer\.ln_f\.weight/);
});
