// Chunked streaming (what `tprun convert` ranks run) gives exactly the in-memory shards, whatever the
// chunk size: qkv pieces and row-parallel column cuts crossing chunk boundaries, casts per chunk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LlamaForCausalLM, planRank } from 'tprun';
import { pipeShards } from '../dist/checkpoint/shard.js';
import { BROWN, BROWN_META, sameBytes } from './helpers/h3.js';
import { must } from './helpers/must.js';

async function streamed(open, tp, rank, chunkBytes, dtype) {
  const { config, source } = open({ mapping: { tp_size: tp }, dtype });
  const plan = planRank(source, config, rank);
  const out = new Map(plan.map((e) => [e.name, new Uint8Array(e.shape.reduce((a, b) => a * b, 1) * { bfloat16: 2, float16: 2, float32: 4 }[e.dtype])]));
  let chunks = 0;
  await pipeShards(source, plan, async (name, data, offset) => {
    must(out.get(name), name).set(data, offset);
    chunks++;
  }, { chunkBytes });
  source.close();
  return { out, chunks };
}

test('streamed shards equal in-memory shards for HF and Meta at tp 1, 2, 8 with tiny chunks', async () => {
  const sources = {
    hf: (o) => LlamaForCausalLM.openHuggingFace(BROWN, o),
    meta: (o) => LlamaForCausalLM.openMetaCkpt(BROWN_META, o),
  };
  for (const [kind, open] of Object.entries(sources)) {
    for (const tp of kind === 'hf' ? [2, 8] : [2]) {
      for (const rank of new Set([0, tp - 1])) {
        for (const [chunkBytes, dtype] of /** @type {const} */ ([[1000, undefined], [1 << 16, 'float32'], [333, 'float16']])) {
          const { out, chunks } = await streamed(open, tp, rank, chunkBytes, dtype);
          const want = LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: tp }, rank, dtype });
          assert.ok(chunks > want.weights.size, 'several chunks per tensor');
          for (const [n, t] of want.weights) assert.ok(sameBytes(out.get(n), t.data), `${kind} tp=${tp} rank=${rank} chunk=${chunkBytes} ${n}`);
        }
      }
    }
  }
});
