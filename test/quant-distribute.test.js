// `tprun convert --quant` on 2 real ranks: only rank 0 reads the model (every file each rank opens is
// traced), rank 1 gets its quantized shard over the world, and the files equal the shards of the
// in-process quantization bit for bit. Bad calibration input fails every rank, leaving no output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { LlamaForCausalLM, readSafetensors, shardContext, shardTensor, quantizeWeights } from 'tprun';

const MODEL = resolve('models/brown-llama-a');
const TRACE = resolve('test/helpers/trace-open.mjs');

function convert(dir, extra) {
  return execa(process.execPath, ['dist/cli.js', 'convert', '--model', MODEL, '--tp', '2', '--out', join(dir, 'ckpt'), ...extra], {
    reject: false, all: true, timeout: 120_000,
    env: { TRACE_OPEN_DIR: dir, NODE_OPTIONS: `--import=${TRACE}` },
  });
}

test('convert --quant int4_wo --tp 2: rank 1 opens no model file and receives exactly its shard', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-qdist-'));
  try {
    const r = await convert(dir, ['--quant', 'int4_wo', '--group-size', '64']);
    assert.equal(r.exitCode, 0, r.all);
    const opened = (rank) => readFileSync(join(dir, `opened.${rank}.log`), 'utf8').split('\n').filter(Boolean);
    const modelFiles = (rank) => opened(rank).filter((p) => resolve(p).startsWith(MODEL));
    assert.ok(modelFiles(0).some((p) => p.endsWith('.safetensors')), 'the trace sees rank 0 read the weights');
    assert.ok(opened(1).length > 0, 'rank 1 was traced');
    assert.deepEqual(modelFiles(1), [], 'rank 1 opened nothing of the model');

    const cfg = JSON.parse(readFileSync(join(dir, 'ckpt', 'config.json'), 'utf8'));
    assert.deepEqual({ ...cfg.quantization }, { quant_algo: 'W4A16_AWQ', kv_cache_quant_algo: null, group_size: 64, has_zero_point: false, pre_quant_scale: true });
    assert.deepEqual(cfg.mapping, { world_size: 2, tp_size: 2, pp_size: 1 });
    const full = LlamaForCausalLM.fromHuggingFace(MODEL, { mapping: { tp_size: 1 } });
    const q = await quantizeWeights(full.config, full.weights, { algo: 'int4_wo', groupSize: 64 });
    const ctx = shardContext(cfg);
    for (const rank of [0, 1]) {
      const got = readSafetensors(join(dir, 'ckpt', `rank${rank}.safetensors`));
      assert.equal(got.size, q.weights.size);
      for (const [name, t] of q.weights) {
        const want = shardTensor(name, t, ctx, rank);
        const g = got.get(name);
        assert.ok(g, `rank ${rank} lacks ${name}`);
        assert.equal(g.dtype, want.dtype, name);
        assert.deepEqual(g.shape, want.shape, name);
        assert.ok(Buffer.from(g.data).equals(Buffer.from(want.data)), `rank ${rank} ${name}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('convert --quant w8a8_sq with a missing --calib file: every rank fails naming it, no output left', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-qdist-'));
  try {
    const r = await convert(dir, ['--quant', 'w8a8_sq', '--calib', join(dir, 'nope.txt')]);
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.all, /--calib .*nope\.txt: cannot read it/);
    assert.ok(!existsSync(join(dir, 'ckpt')), 'no checkpoint directory');
    const left = (await import('node:fs')).readdirSync(dir).filter((f) => f.includes('ckpt'));
    assert.deepEqual(left, [], 'no temp sibling left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
