// TensorRT-LLM users' spellings on convert/build, `build --device auto`, and a max_seq_len the model
// cannot reach: what a user coming from trtllm-build types works, and what cannot work says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MODEL = new URL('../models/brown-llama-a', import.meta.url).pathname;
const tprun = (args, env = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, TPRUN_QUIET: '1', ...env } });

test('convert and build take TensorRT-LLM spellings: --model_dir --tp_size --pp_size --output_dir --checkpoint_dir --max_*', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-conv-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let r = tprun(['convert', '--model_dir', MODEL, '--tp_size', '1', '--pp_size', '2', '--output_dir', join(dir, 'ckpt')]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'ckpt/config.json'), 'utf8')).mapping, { world_size: 2, tp_size: 1, pp_size: 2 });
  r = tprun(['build', '--checkpoint_dir', join(dir, 'ckpt'), '--tokenizer', MODEL, '--output_dir', join(dir, 'eng'),
    '--max_batch_size', '2', '--max_input_len', '64', '--max_seq_len', '128']);
  assert.equal(r.status, 0, r.stderr);
  const bc = JSON.parse(readFileSync(join(dir, 'eng/config.json'), 'utf8')).build_config;
  assert.equal(bc.max_batch_size, 2);
  assert.equal(bc.max_input_len, 64);
  assert.equal(bc.max_seq_len, 128);
});

test('build --max-seq-len past the model\'s positions (no rope scaling): exit 2, one line naming both, no output', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-conv-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = tprun(['build', '--model', MODEL, '--max-seq-len', '100000', '--out', join(dir, 'eng')]);
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('tprun:') && !l.includes('exited with code'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /--max-seq-len 100000 exceeds the model's 1024 positions \(it has no rope scaling\)/);
  assert.ok(!existsSync(join(dir, 'eng')));
});

test('build --device auto builds for the device that opens (a GPU engine where WebGPU has an adapter, else CPU)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-conv-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Without any Vulkan driver there is no adapter: auto means the CPU.
  const r = tprun(['build', '--model', MODEL, '--device', 'auto', '--max-seq-len', '64', '--max-input-len', '32', '--out', join(dir, 'eng')], { VK_DRIVER_FILES: '/nonexistent.json', VK_ICD_FILENAMES: '/nonexistent.json' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(readFileSync(join(dir, 'eng/config.json'), 'utf8')).build_config.device, 'cpu');
  // With lavapipe (Mesa's Vulkan on the CPU, which .ci/run installs) an adapter opens: auto means the GPU.
  if (!existsSync('/usr/share/vulkan/icd.d/lvp_icd.json')) return t.diagnostic('no lavapipe here: the GPU half is not checked');
  const g = tprun(['build', '--model', MODEL, '--device', 'auto', '--max-seq-len', '64', '--max-input-len', '32', '--out', join(dir, 'eng-gpu')]);
  assert.equal(g.status, 0, g.stderr);
  assert.equal(JSON.parse(readFileSync(join(dir, 'eng-gpu/config.json'), 'utf8')).build_config.device, 'gpu');
});
