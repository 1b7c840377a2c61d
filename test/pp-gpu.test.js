// Pipeline parallelism on ORT's WebGPU provider: two stages (two ranks on one adapter where there is
// one), float32, give transformers' greedy tokens. Skips with a message where no WebGPU adapter exists.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probeWebGpu } from '../dist/engine/device.js';
import { MODEL, REF, relL2, tprun, jsonLines } from './helpers/engine.js';

let dir;
let noAdapter;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-pp-gpu-'));
  noAdapter = await probeWebGpu();
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('pp 2 on WebGPU: two prompts micro-batched give transformers\' logits and greedy tokens', async (t) => {
  if (noAdapter) return t.skip(`no WebGPU adapter: ${noAdapter}`);
  const engine = join(dir, 'pp2');
  let r = await tprun(['build', '--model', MODEL, '--pp', '2', '--device', 'gpu', '--max-input-len', '32', '--max-seq-len', '64', '--out', engine]);
  assert.equal(r.code, 0, r.stderr);
  const ps = REF.prompts.slice(0, 2);
  r = await tprun(['generate', '--engine', engine, '--max-new-tokens', '8', '--ignore-eos', '--json', '--logits', ...ps.flatMap((p) => ['--prompt', p.text])], { timeoutMs: 300000 });
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  ps.forEach((p, b) => {
    assert.ok(relL2(out[b].last_prompt_logits, p.last_logits) < 1e-4, `prompt ${b}`);
    assert.deepEqual(out[b].new_ids, p.greedy_new_ids.slice(0, 8), `prompt ${b}`);
  });
  assert.deepEqual(r.left, []);
});
