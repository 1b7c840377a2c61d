// build --prefill-int8-gemm takes effect only for per-channel weight-only linears (int8_wo; a W4A16
// checkpoint) on the CPU (src/engine/build-config.ts prefillInt8GemmRefusal). It was accepted silently for
// int4_wo, int4_awq, w8a8_sq and float builds (build_config recorded prefill_int8_gemm: true for an engine
// without it) and refused for --device gpu only after the whole load and quantization. Now each is one
// line naming the option, exit 2, no output, before any rank starts or loads (no such trace span).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tprun } from './helpers/engine.js';
import { writeTinyLlama } from './helpers/tiny-model.js';
import { prefillInt8GemmRefusal } from '../dist/engine/build-config.js';
import { loadShardForBuild } from '../dist/engine/load-shard.js';
import { build } from '../dist/engine/engine.js';

let dir;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-pig-'));
  writeTinyLlama(dir, { H: 128, I: 256, nh: 4, nkv: 2 });
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Spans the job's trace recorded: the launcher writes it once ranks ran (their spans merged), whatever
 *  their end; none when the launcher refused before starting any. */
function spans(trace) {
  if (!existsSync(trace)) return new Set();
  return new Set(JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e) => e.ph === 'X').map((e) => e.name));
}

async function refused(name, args, line) {
  const out = join(dir, `${name}.engine`);
  const trace = join(dir, `${name}.trace.json`);
  const r = await tprun(['build', ...args, '--prefill-int8-gemm', '--out', out, '--trace', trace]);
  assert.equal(r.code, 2, `${name}: ${r.stderr}`);
  assert.match(r.stderr.trim(), line, name);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.ok(!existsSync(out), `${name}: no output dir`);
  const s = spans(trace);
  for (const span of ['load', 'build', 'save', 'weights.write']) assert.ok(!s.has(span), `${name}: no ${span} span ran (${[...s]})`);
  assert.doesNotMatch(r.stderr, /\[rank/, 'no rank started');
  assert.deepEqual(r.left, [], 'no process left');
}

test('which builds it applies to (injected configs)', () => {
  assert.equal(prefillInt8GemmRefusal({ device: 'cpu' }, 'W8A16'), undefined);
  assert.equal(prefillInt8GemmRefusal({ device: 'cpu', dtype: 'float16', int4_matmul_dtype: 'auto' }, 'W8A16'), undefined);
  assert.equal(prefillInt8GemmRefusal({ device: 'cpu', dtype: 'float16' }, 'W4A16'), undefined);
  assert.equal(prefillInt8GemmRefusal({}, 'W8A16'), undefined, 'device not yet agreed (auto)');
  assert.match(String(prefillInt8GemmRefusal({ device: 'cpu', dtype: 'float16', int4_matmul_dtype: 'auto' }, 'W4A16')), /--int4-matmul-dtype auto/);
  assert.match(String(prefillInt8GemmRefusal({ device: 'gpu' }, 'W8A16')), /^--prefill-int8-gemm is for --device cpu builds/);
  for (const algo of ['W4A16_AWQ', 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN', 'FP8', null]) {
    assert.match(String(prefillInt8GemmRefusal({ device: 'cpu' }, algo)), /^--prefill-int8-gemm needs per-channel weight-only linears/, String(algo));
  }
});

test('--prefill-int8-gemm where it builds nothing: one line, exit 2, no output, no rank loads', { timeout: 600_000 }, async () => {
  await refused('i4', ['--model', dir, '--tp', '2', '--quant', 'int4_wo', '--group-size', '64'], /^tprun: --prefill-int8-gemm needs per-channel weight-only linears .*not --quant int4_wo \(W4A16_AWQ\)$/);
  await refused('awq', ['--model', dir, '--tp', '2', '--quant', 'int4_awq', '--group-size', '64'], /^tprun: --prefill-int8-gemm needs .*not --quant int4_awq \(W4A16_AWQ\)$/);
  await refused('sq', ['--model', dir, '--tp', '2', '--quant', 'w8a8_sq'], /^tprun: --prefill-int8-gemm needs .*not --quant w8a8_sq \(W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN\)$/);
  await refused('float', ['--model', dir, '--tp', '2', '--dtype', 'float16'], /^tprun: --prefill-int8-gemm needs .*not a float engine \(no --quant\)$/);
  await refused('gpu', ['--model', dir, '--tp', '2', '--quant', 'int8_wo', '--device', 'gpu'], /^tprun: --prefill-int8-gemm is for --device cpu builds/);
  // A float checkpoint: its config.json's quant_algo (none) is read before ranks start.
  const ck = join(dir, 'ckpt');
  const cv = await tprun(['convert', '--model', dir, '--tp', '2', '--out', ck]);
  assert.equal(cv.code, 0, cv.stderr);
  await refused('ckpt', ['--checkpoint', ck], /^tprun: --prefill-int8-gemm needs .*not a float engine \(no --quant\)$/);
});

test('int8_wo --prefill-int8-gemm still builds and records it', { timeout: 600_000 }, async () => {
  const out = join(dir, 'i8.engine');
  const r = await tprun(['build', '--model', dir, '--quant', 'int8_wo', '--prefill-int8-gemm', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).build_config.prefill_int8_gemm, true);
});

test('the library build() refuses it for a float shard (ranks in a world tprun did not start reach it there)', async () => {
  const shard = await loadShardForBuild({ model: dir, tp: 1, pp: 1, world: /** @type {any} */ ({ rank: 0, size: 1, localRank: 0 }) });
  await assert.rejects(build(shard, { prefill_int8_gemm: true }), (/** @type {any} */ e) => e.exitCode === 2 && /^--prefill-int8-gemm needs per-channel weight-only linears .*not a float engine/.test(e.message));
});
