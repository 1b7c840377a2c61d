// The synthetic checkpoint generator: HF (single file or shards + index, transformers 4 or 5 keys) and
// Meta (any MP) copies of the same seeded weights convert to identical shards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { LlamaForCausalLM, generateCheckpoint } from 'tprun';
import { ROOT, sameBytes, tmpDir } from './helpers/h3.js';

test('generated HF (single / sharded, v4 / v5 config) and Meta (mp 2) agree at tp 2 and 4', (t) => {
  const work = tmpDir(t);
  const single = path.join(work, 'single'), sharded = path.join(work, 'sharded'), meta = path.join(work, 'meta');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli.js'), 'gen-checkpoint', '--preset', 'brown', '--layers', '3', '--out', single, '--config-style', '4', '--seed', '9'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).bytes, (2 * 4096 * 256 + 256 + 3 * (2 * 256 + 512 * 256 + 256 * 256 + 3 * 768 * 256)) * 2);
  assert.deepEqual(fs.readdirSync(single).sort(), ['config.json', 'model.safetensors']);
  assert.equal(JSON.parse(fs.readFileSync(path.join(single, 'config.json'), 'utf8')).rope_theta, 10000);
  generateCheckpoint({ preset: 'brown', layers: 3, out: sharded, shardBytes: 1e6, seed: 9 });
  assert.ok(fs.readdirSync(sharded).filter((f) => f.endsWith('.safetensors')).length > 3);
  assert.ok(fs.existsSync(path.join(sharded, 'model.safetensors.index.json')));
  generateCheckpoint({ preset: 'brown', layers: 3, out: meta, format: 'meta', mp: 2, seed: 9 });
  for (const tp of [2, 4]) {
    for (let rank = 0; rank < tp; rank++) {
      const o = { mapping: { tp_size: tp }, rank };
      const a = LlamaForCausalLM.fromHuggingFace(single, o);
      for (const b of [LlamaForCausalLM.fromHuggingFace(sharded, o), LlamaForCausalLM.fromMetaCkpt(meta, o)]) {
        for (const [n, w] of a.weights) assert.ok(sameBytes(b.tensor(n).data, w.data), `${n} tp=${tp} rank=${rank}`);
      }
    }
  }
  // A different seed gives different weights.
  const other = path.join(work, 'other');
  generateCheckpoint({ preset: 'brown', layers: 3, out: other, seed: 10 });
  assert.ok(!sameBytes(LlamaForCausalLM.fromHuggingFace(other).tensor('lm_head.weight').data, LlamaForCausalLM.fromHuggingFace(single).tensor('lm_head.weight').data));
});

test('gen-checkpoint: unknown preset is a one-line error, exit 2, nothing written', (t) => {
  const work = tmpDir(t);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli.js'), 'gen-checkpoint', '--preset', 'gpt-5', '--out', path.join(work, 'x')], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr.trim(), /^tprun gen-checkpoint: --preset gpt-5: unknown \(brown, tinyllama-1\.1b/);
  assert.deepEqual(fs.readdirSync(work), []);
});
