// Quantized tensors through the one sharding table: quantize-then-shard equals shard-then-quantize bit for
// bit for group-wise weight-only int4 (and per-channel int8 on column-parallel linears), and row splits
// that would cut a group fail clearly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LlamaForCausalLM, shardTensor, shardContext, quantizeWeights } from 'tprun';
import { checkGroups } from '../dist/quantization/distribute.js';
import { must } from './helpers/must.js';

const full = LlamaForCausalLM.fromHuggingFace('models/brown-llama-a', { mapping: { tp_size: 1 } });
const withTp = (tp) => ({ ...full.config, mapping: { world_size: tp, tp_size: tp, pp_size: 1 } });
const LINEARS = ['attention.qkv', 'attention.dense', 'mlp.fc', 'mlp.gate', 'mlp.proj'];

function eqTensor(a, b, what) {
  assert.equal(a.dtype, b.dtype, `${what} dtype`);
  assert.deepEqual(a.shape, b.shape, `${what} shape`);
  assert.ok(Buffer.from(a.data).equals(Buffer.from(b.data)), `${what}: bytes differ`);
}

for (const tp of [2, 4]) {
  test(`int4 g32 weight-only at tp=${tp}: quantize-then-shard == shard-then-quantize, bit for bit`, async () => {
    /** @type {import('tprun').QuantOptions} */
    const opts = { algo: 'int4_wo', groupSize: 32 };
    const q = await quantizeWeights(full.config, full.weights, opts);
    // The context knows the quant_algo: it decides which axes the packed companions cut along.
    const ctx = shardContext({ ...withTp(tp), quantization: q.quantization });
    for (let r = 0; r < tp; r++) {
      // Shard the float weights first, then quantize that rank's pieces on their own.
      const floatShard = new Map([...full.weights].map(([n, t]) => [n, shardTensor(n, t, shardContext(withTp(tp)), r)]));
      const cfgR = { ...full.config };
      const qShard = await quantizeWeights(cfgR, floatShard, opts);
      for (let l = 0; l < full.config.num_hidden_layers; l++) {
        for (const lin of LINEARS) {
          for (const role of ['weight', 'weights_scaling_factor', 'prequant_scaling_factor']) {
            const name = `transformer.layers.${l}.${lin}.${role}`;
            eqTensor(shardTensor(name, must(q.weights.get(name), name), ctx, r), qShard.weights.get(name), `rank ${r} ${name}`);
          }
        }
      }
    }
  });
}

test('int8_wo (W8A16) keeps the float weights: TensorRT-LLM and the engine builder quantize them per rank', async () => {
  const q = await quantizeWeights(full.config, full.weights, { algo: 'int8_wo' });
  assert.equal(q.quantization.quant_algo, 'W8A16');
  for (const lin of LINEARS) {
    const name = `transformer.layers.3.${lin}.weight`;
    assert.equal(q.weights.get(name), full.weights.get(name), name);
    assert.ok(!q.weights.has(`transformer.layers.3.${lin}.per_channel_scale`));
  }
});

test('row splits must keep int4 groups whole: clear errors from the plan check and from the table', async () => {
  // attention.dense has 8 heads x 32 = 256 inputs: 64 per rank at tp=4, not a multiple of 128.
  assert.throws(() => checkGroups(withTp(4), { algo: 'int4_wo', groupSize: 128, calibFile: '', calibSamples: 0 }), /--group-size 128: attention\.dense has 64 input features per rank at tp=4/);
  assert.doesNotThrow(() => checkGroups(withTp(2), { algo: 'int4_wo', groupSize: 128, calibFile: '', calibSamples: 0 }));
  const q = await quantizeWeights(full.config, full.weights, { algo: 'int4_wo', groupSize: 128 });
  const name = 'transformer.layers.0.attention.dense.weights_scaling_factor';
  assert.throws(() => shardTensor(name, must(q.weights.get(name), name), shardContext({ ...withTp(4), quantization: q.quantization }), 0), /attention\.dense\.weights_scaling_factor/);
});
