// Device choice (src/engine/device.ts) and float16 engines on ORT's WebGPU provider. The GPU tests skip
// with a message where no WebGPU adapter exists (CI); the device-choice logic and the no-adapter errors
// run everywhere.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseDevice, hostGpus, onnxOutputNames, outputLocations, probeWebGpu, wantedAdapter } from '../dist/engine/device.js';
import { Graph } from '../dist/engine/graph.js';
import { WeightFile } from '../dist/engine/weight-file.js';
import { MODEL, REF, relDiff, tprun, jsonLines } from './helpers/engine.js';

let dir;
let noAdapter; // null where a WebGPU adapter exists, else why not
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-gpu-'));
  noAdapter = await probeWebGpu();
});
after(() => rmSync(dir, { recursive: true, force: true }));

function fakeProc(gpus) {
  const p = join(dir, `proc-${Math.random().toString(16).slice(2)}`);
  for (const [bus, model, uuid] of gpus) {
    mkdirSync(join(p, bus), { recursive: true });
    writeFileSync(join(p, bus, 'information'), `Model: \t\t ${model}\nIRQ: 1\nGPU UUID: \t ${uuid}\nBus Location: \t ${bus}\n`);
  }
  return p;
}

test('host GPUs come from the NVIDIA driver in PCI bus order; adapters follow the launcher binding', () => {
  const gpus = hostGpus(fakeProc([['0000:41:00.0', 'NVIDIA H200', 'GPU-bbb'], ['0000:07:00.0', 'NVIDIA H200', 'GPU-aaa']]));
  assert.deepEqual(gpus.map((g) => [g.index, g.uuid, g.bus]), [[0, 'GPU-aaa', '0000:07:00.0'], [1, 'GPU-bbb', '0000:41:00.0']]);
  assert.deepEqual(hostGpus(join(dir, 'no-such-dir')), []);
  assert.equal(wantedAdapter(gpus, { CUDA_VISIBLE_DEVICES: '1', TPRUN_LOCAL_RANK: '0' }).index, 1);
  assert.equal(wantedAdapter(gpus, { CUDA_VISIBLE_DEVICES: 'GPU-bbb' }).index, 1);
  assert.equal(wantedAdapter(gpus, { TPRUN_GPU_ADAPTER: '0', CUDA_VISIBLE_DEVICES: '1' }).index, 0);
  // No binding: local rank, shared round-robin when ranks outnumber GPUs (as `tprun --gpus auto` does).
  assert.deepEqual([0, 1, 2, 3].map((r) => wantedAdapter(gpus, { TPRUN_LOCAL_RANK: String(r) }).index), [0, 1, 0, 1]);
  assert.equal(wantedAdapter(gpus, { TPRUN_LOCAL_RANK: '3' }).explicit, false);
  assert.throws(() => wantedAdapter(gpus, { CUDA_VISIBLE_DEVICES: 'GPU-ccc', TPRUN_RANK: '5' }), /rank 5: CUDA_VISIBLE_DEVICES=GPU-ccc: no GPU with that UUID/);
  assert.throws(() => wantedAdapter(gpus, { CUDA_VISIBLE_DEVICES: '-1' }), (e) => e.exitCode === 2 && /--device cpu/.test(e.message));
});

test('GPU sessions keep the KV cache and residual on the GPU and bring logits and partial sums to the host', () => {
  const g = new Graph('t', 'float32', new WeightFile('none.bin'));
  const x = g.input('x', 'float32', [1]);
  for (const n of ['present.0.key', 'residual', 'partial', 'logits']) g.node('Identity', [x], [n]);
  for (const n of ['present.0.key', 'residual', 'partial', 'logits']) g.output(n, 'float32', [1]);
  const names = onnxOutputNames(g.encode());
  assert.deepEqual(names, ['present.0.key', 'residual', 'partial', 'logits']);
  assert.deepEqual(outputLocations('gpu', names), { 'present.0.key': 'gpu-buffer', residual: 'gpu-buffer', partial: 'cpu', logits: 'cpu' });
  assert.equal(outputLocations('cpu', names), undefined);
});

test('cpu is taken as asked; auto and gpu without an adapter: CPU fallback, or a one-line error naming the rank', async (t) => {
  assert.equal((await chooseDevice('cpu')).device, 'cpu');
  if (!noAdapter) return t.skip('this machine has a WebGPU adapter');
  const auto = await chooseDevice('auto', {});
  assert.equal(auto.device, 'cpu');
  assert.match(auto.reason, /no WebGPU adapter/);
  await assert.rejects(chooseDevice('gpu', { TPRUN_RANK: '3' }), (e) => e.exitCode === 2 && /^rank 3: --device gpu but no WebGPU adapter is usable: \S/.test(e.message) && !e.message.includes('\n'));
});

let engine;
test('tprun build --dtype float16 --device gpu; generate --device auto runs it (GPU where there is one, else CPU)', async () => {
  engine = join(dir, 'brown-f16');
  const b = await tprun(['build', '--model', MODEL, '--dtype', 'float16', '--device', 'gpu', '--max-seq-len', '512', '--out', engine]);
  assert.equal(b.code, 0, b.stderr);
  const p = REF.prompts[0];
  const r = await tprun(['generate', '--engine', engine, '--device', 'auto', '--input-ids', p.input_ids.join(','), '--max-new-tokens', '24', '--ignore-eos', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(jsonLines(r.stdout)[0].new_ids, p.greedy_new_ids);
});

test('tprun generate --device gpu without an adapter: exit 2, one line', async (t) => {
  if (!noAdapter) return t.skip('this machine has a WebGPU adapter');
  const r = await tprun(['generate', '--engine', engine, '--device', 'gpu', '--input-ids', '0,1,2', '--max-new-tokens', '2']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^tprun: rank 0: --device gpu but no WebGPU adapter is usable/m);
  assert.equal(r.stdout, '');
});

test('GPU: float16 perplexity within 1% of transformers, greedy tokens as the reference for ≥3 of 4 prompts', async (t) => {
  if (noAdapter) return t.skip(`no WebGPU adapter here (${noAdapter})`);
  const ppl = await tprun(['perplexity', '--engine', engine, '--device', 'gpu', '--json']);
  assert.equal(ppl.code, 0, ppl.stderr);
  assert.ok(relDiff(jsonLines(ppl.stdout)[0].ppl, REF.heldout_ppl.ppl) < 0.01);
  let equal = 0;
  for (const p of REF.prompts) {
    const r = await tprun(['generate', '--engine', engine, '--device', 'gpu', '--input-ids', p.input_ids.join(','), '--max-new-tokens', '24', '--ignore-eos', '--json']);
    assert.equal(r.code, 0, r.stderr);
    if (JSON.stringify(jsonLines(r.stdout)[0].new_ids) === JSON.stringify(p.greedy_new_ids)) equal++;
  }
  assert.ok(equal >= 3, `${equal} of 4 prompts`);
});

test('GPU: a rank bound to an adapter this host lacks fails with exit 2 naming the host\'s GPUs', async (t) => {
  if (noAdapter) return t.skip(`no WebGPU adapter here (${noAdapter})`);
  const r = await tprun(['generate', '--engine', engine, '--device', 'gpu', '--input-ids', '0,1,2', '--max-new-tokens', '2'], { env: { TPRUN_GPU_ADAPTER: '64' } });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /GPU adapter 64 requested \(TPRUN_GPU_ADAPTER=64\) but this host has/);
});
