// Meta format: the real 2-way MP files convert exactly like the HF copy; so do Meta files with 1 and 4
// MP files written from the same weights, at every tp; the pickle/zip readers read them back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LlamaForCausalLM, PRESETS, isInputError } from 'tprun';
import { openHfTensors } from '../dist/checkpoint/hf.js';
import { writeMeta } from '../dist/checkpoint/generate.js';
import { TorchFile } from '../dist/checkpoint/torch-file.js';
import { metaRow } from '../dist/checkpoint/meta.js';
import { BROWN, BROWN_META, sameBytes, tmpDir } from './helpers/h3.js';

function assertSame(a, b, what) {
  assert.deepEqual([...a.weights.keys()], [...b.weights.keys()]);
  for (const [n, t] of a.weights) {
    assert.deepEqual(b.tensor(n).shape, t.shape, `${what} ${n}`);
    assert.ok(sameBytes(b.tensor(n).data, t.data), `${what} ${n}`);
  }
}

test('the real consolidated.0{0,1}.pth: layout as Meta writes it (tok_embeddings split on dim 1)', () => {
  const f = TorchFile.open(path.join(BROWN_META, 'consolidated.01.pth'));
  assert.deepEqual(f.get('tok_embeddings.weight').shape, [4096, 128]);
  assert.deepEqual(f.get('output.weight').shape, [2048, 256]);
  assert.deepEqual(f.get('layers.0.attention.wq.weight').shape, [128, 256]);
  assert.deepEqual(f.get('layers.0.attention.wk.weight').shape, [64, 256]);
  assert.deepEqual(f.get('layers.0.attention.wo.weight').shape, [256, 128]);
  assert.deepEqual(f.get('layers.0.feed_forward.w2.weight').shape, [256, 384]);
  assert.deepEqual(f.get('layers.0.attention_norm.weight').shape, [256]);
  assert.equal(f.get('norm.weight').dtype, 'bfloat16');
  f.close();
  // metaRow is a permutation within each head
  const seen = new Set([...Array(64).keys()].map((r) => metaRow(r, 32)));
  assert.equal(seen.size, 64);
  assert.equal(metaRow(1, 32), 2);
  assert.equal(metaRow(16, 32), 1);
});

test('Meta (2 MP files, real) equals HF at tp 1, 2, 4, 8', () => {
  for (const tp of [1, 2, 4, 8]) {
    for (let rank = 0; rank < tp; rank++) {
      const o = { mapping: { tp_size: tp }, rank };
      assertSame(LlamaForCausalLM.fromHuggingFace(BROWN, o), LlamaForCausalLM.fromMetaCkpt(BROWN_META, o), `tp=${tp} rank=${rank}`);
    }
  }
});

test('Meta with 1 and 4 MP files (written from the HF weights) equals HF at tp 1, 2, 4, 8', (t) => {
  const work = tmpDir(t);
  const src = openHfTensors(BROWN);
  const shape = { ...PRESETS.brown };
  for (const mp of [1, 4]) {
    const dir = path.join(work, `mp${mp}`);
    fs.mkdirSync(dir);
    writeMeta(dir, src, shape, mp);
    assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.pth')).length, mp);
    for (const tp of [1, 2, 4, 8]) {
      for (const rank of new Set([0, tp - 1])) {
        const o = { mapping: { tp_size: tp }, rank };
        assertSame(LlamaForCausalLM.fromHuggingFace(BROWN, o), LlamaForCausalLM.fromMetaCkpt(dir, o), `mp=${mp} tp=${tp} rank=${rank}`);
      }
    }
  }
  src.close();
  // Our writer reproduces the real 2-way files byte for byte in every tensor.
  const dir = path.join(work, 'mp2');
  fs.mkdirSync(dir);
  writeMeta(dir, openHfTensors(BROWN), shape, 2);
  for (const f of ['consolidated.00.pth', 'consolidated.01.pth']) {
    const a = TorchFile.open(path.join(BROWN_META, f));
    const b = TorchFile.open(path.join(dir, f));
    for (const [n, ta] of a.tensors) {
      if (!b.tensors.has(n)) continue; // rope.freqs and the like
      const rows = ta.shape.length ? ta.shape[0] : 1;
      const rb = ta.shape.slice(1).reduce((x, y) => x * y, 2);
      const da = new Uint8Array(rows * rb), db = new Uint8Array(rows * rb);
      a.readRows(n, 0, rows, da, 0);
      b.readRows(n, 0, rows, db, 0);
      assert.ok(sameBytes(da, db), `${f} ${n}`);
    }
    a.close();
    b.close();
  }
});

test('bad Meta input: missing tensor, wrong MP numbering, corrupt archive', (t) => {
  const work = tmpDir(t);
  const dir = path.join(work, 'm');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(BROWN_META, 'params.json'), path.join(dir, 'params.json'));
  fs.copyFileSync(path.join(BROWN_META, 'consolidated.00.pth'), path.join(dir, 'consolidated.00.pth'));
  fs.copyFileSync(path.join(BROWN_META, 'consolidated.01.pth'), path.join(dir, 'consolidated.02.pth'));
  assert.throws(() => LlamaForCausalLM.fromMetaCkpt(dir), /consolidated\.02\.pth: expected consolidated\.01\.pth/);
  fs.renameSync(path.join(dir, 'consolidated.02.pth'), path.join(dir, 'consolidated.01.pth'));
  const p = path.join(dir, 'consolidated.01.pth');
  fs.truncateSync(p, 1000000);
  assert.throws(() => LlamaForCausalLM.fromMetaCkpt(dir), (e) => isInputError(e) && e.message.startsWith(p) && /not a zip archive|truncated/.test(e.message));
  fs.copyFileSync(path.join(BROWN_META, 'consolidated.01.pth'), p);
  const params = JSON.parse(fs.readFileSync(path.join(dir, 'params.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'params.json'), JSON.stringify({ ...params, n_layers: 7 }));
  assert.throws(() => LlamaForCausalLM.fromMetaCkpt(dir), /consolidated\.00\.pth: missing tensor layers\.6\./);
  fs.writeFileSync(path.join(dir, 'params.json'), JSON.stringify({ ...params, dim: 512 }));
  assert.throws(() => LlamaForCausalLM.fromMetaCkpt(dir), /do not join into|disagrees with params\.json/);
});
