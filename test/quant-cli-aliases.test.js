// TensorRT-LLM's quantization flags (quantize.py --qformat / --kv_cache_dtype, convert_checkpoint.py
// --use_weight_only --weight_only_precision / --smoothquant / --int8_kv_cache) map to tprun's schemes;
// the ones naming schemes tprun does not run exit 2 with one line saying which.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { quantRequestFrom } from '../dist/quantization/cli-options.js';
import { quantConfigFor } from 'tprun';
import { must } from './helpers/must.js';

const algoOf = (a) => quantConfigFor(must(quantRequestFrom({ 'group-size': 128, 'sq-activations': 'per-token', ...a }), `a quant request from ${JSON.stringify(a)}`)).quant_algo;

test('TensorRT-LLM spellings select the same quant_algo as --quant', () => {
  assert.equal(algoOf({ qformat: 'int8_wo' }), 'W8A16');
  assert.equal(algoOf({ use_weight_only: true, weight_only_precision: 'int8' }), 'W8A16');
  assert.equal(algoOf({ use_weight_only: true }), 'W8A16');
  assert.equal(algoOf({ use_weight_only: true, weight_only_precision: 'int4' }), 'W4A16_AWQ');
  assert.equal(algoOf({ qformat: 'int4_awq' }), 'W4A16_AWQ');
  assert.equal(algoOf({ qformat: 'w4a8_awq' }), 'W4A8_AWQ');
  assert.equal(algoOf({ qformat: 'int8_sq' }), 'W8A8_SQ_PER_CHANNEL');
  assert.equal(algoOf({ smoothquant: 0.5, per_channel: true, per_token: true }), 'W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN');
  assert.equal(algoOf({ smoothquant: 0.5, per_channel: true }), 'W8A8_SQ_PER_CHANNEL');
  assert.equal(algoOf({ qformat: 'fp8' }), 'FP8');
  assert.equal(quantRequestFrom({ smoothquant: 0.8, per_channel: true })?.smoothAlpha, 0.8);
  assert.equal(quantRequestFrom({ int8_kv_cache: true })?.kvCache, 'int8');
  assert.equal(quantRequestFrom({ kv_cache_dtype: 'int8' })?.kvCache, 'int8');
  assert.equal(quantRequestFrom({ qformat: 'full_prec' }), undefined);
});

/** @type {[string[], RegExp][]} */
const BAD = [
  [['--kv_cache_dtype', 'fp8'], /--kv_cache_dtype fp8/],
  [['--use_weight_only', '--weight_only_precision', 'int4_gptq'], /int4_gptq/],
  [['--smoothquant', '0.5'], /--smoothquant without --per_channel/],
  [['--quant', 'fp8', '--qformat', 'int8_wo'], /--quant fp8 and --qformat int8_wo/],
];
for (const [args, re] of BAD) {
  test(`convert ${args.join(' ')}: exit 2, one line`, async () => {
    const r = await execa(process.execPath, ['dist/cli.js', 'convert', '--model', 'models/brown-llama-a', '--out', '/nonexistent/never', ...args], { reject: false, all: true, timeout: 60_000 });
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.all, re);
  });
}
