// Issue 8's table needs each decode step's share in all-reduce: `bench generate` reports it from one-token
// forwards only (the prompt's all-reduces move T times the bytes and would dilute it), and on tprun's WGSL
// kernels also the time a step spends off the GPU at its all-reduce points. Sanity of the figures on real
// ranks (never their speed): zero at tp 1, positive and a share below 1 at tp 2, the crossing holding the
// all-reduce.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, tprun, jsonLines } from './helpers/engine.js';
import { probeWebGpu } from '../dist/engine/device.js';

const LONG = { timeoutMs: 900_000 };
let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-shares-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

async function build(name, args) {
  const out = join(dir, name);
  const r = await tprun(['build', '--model', MODEL, '--out', out, '--max-seq-len', '64', '--max-input-len', '16', '--quiet', ...args], LONG);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

async function bench(engine, args = []) {
  const r = await tprun(['bench', 'generate', '--one', '--engine', engine, '--prompt-len', '8', '--new-tokens', '6', '--reps', '1', '--json', ...args], LONG);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.left, []);
  const [b] = jsonLines(r.stdout).filter((l) => l.bench === 'generate');
  return b;
}

test('onnxruntime on the CPU: no all-reduce at tp 1; at tp 2 a decode forward\'s all-reduce ms is part of it', { timeout: 1_800_000 }, async () => {
  const one = await bench(await build('cpu-tp1', ['--tp', '1']));
  assert.ok(one.decode_forward_ms > 0, JSON.stringify(one));
  assert.equal(one.allreduce_ms_per_decode_forward, 0);
  assert.equal(one.allreduce_share_of_decode, 0);
  assert.equal(one.crossing_ms_per_decode_forward, undefined); // onnxruntime's runs hold their own copies
  const two = await bench(await build('cpu-tp2', ['--tp', '2']));
  assert.ok(two.allreduce_ms_per_decode_forward > 0, JSON.stringify(two));
  assert.ok(two.allreduce_ms_per_decode_forward < two.decode_forward_ms, JSON.stringify(two));
  assert.ok(two.allreduce_share_of_decode > 0 && two.allreduce_share_of_decode < 1, JSON.stringify(two));
});

test('WGSL kernels at tp 2 (lavapipe in CI): the crossing holds the all-reduce and is part of the forward', { timeout: 1_800_000 }, async (t) => {
  const why = await probeWebGpu();
  if (why) return t.skip(`no WebGPU adapter: ${why}`);
  const b = await bench(await build('gpu-tp2', ['--tp', '2', '--dtype', 'float16', '--device', 'gpu']), ['--kernels', 'wgsl']);
  assert.equal(b.kernels, 'wgsl');
  assert.ok(b.allreduce_ms_per_decode_forward > 0, JSON.stringify(b));
  assert.ok(b.crossing_ms_per_decode_forward >= b.allreduce_ms_per_decode_forward, JSON.stringify(b));
  assert.ok(b.crossing_ms_per_decode_forward < b.decode_forward_ms, JSON.stringify(b));
  assert.ok(b.crossing_share_of_decode > 0 && b.crossing_share_of_decode < 1, JSON.stringify(b));
});
