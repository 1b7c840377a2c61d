// int4 weight-only in a float16 engine. By default MatMulNBits runs in float32 with a Cast pair around
// each linear (on the H200 that decoded at 125 tokens/s against 96 for float16 MatMulNBits: docs/gpu.md);
// `build --int4-matmul-dtype auto` builds float16 MatMulNBits with no Casts (prefill 2.2x faster there). Both
// give what the float32 int4 engine gives. TPRUN_INT4_FP16_DIRECT=1, the flag's predecessor, still works
// (with a deprecation note).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { must } from './helpers/must.js';

const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MODEL = new URL('../models/brown-llama-a', import.meta.url).pathname;
const REF = JSON.parse(readFileSync(new URL('../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));

/** @param {string[]} args @param {Record<string, string>} [env] */
function run(args, env = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env } });
  assert.equal(r.status, 0, r.stderr);
  return r;
}
/** @param {string[]} args */
const tprun = (args) => run(args).stdout;

/** op_type "Cast" as a NodeProto field (field 4, length 4) in the serialized graph. */
const castNodes = (onnx) => onnx.toString('latin1').split('\x22\x04Cast').length - 1;

test('float16 int4_wo engines (Casts around float32 MatMulNBits, or float16 MatMulNBits without): logits and greedy tokens as the float32 int4 engine', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'int4-fp16-'));
  try {
    const out = {};
    for (const kind of ['float16', 'float16-direct', 'float32']) {
      const e = join(dir, kind);
      const flag = kind === 'float16-direct' ? ['--int4-matmul-dtype', 'auto'] : [];
      tprun(['build', '--model', MODEL, '--quant', 'int4_wo', '--dtype', kind.slice(0, 7), '--max-seq-len', '128', '--max-input-len', '64', '--out', e, '-q', ...flag,
        // The float kernels' layouts are compared here; int8 activations (the CPU default, engine-accuracy-level.test.js)
        // round float16 and float32 inputs to different int8 steps, which would blur what this test isolates.
        '--int4-accuracy-level', '0']);
      const casts = castNodes(readFileSync(join(e, 'rank0', 'seg0.onnx')));
      const bc = JSON.parse(readFileSync(join(e, 'config.json'), 'utf8')).build_config;
      assert.equal(bc.int4_matmul_dtype, kind === 'float16-direct' ? 'auto' : 'float32');
      if (kind === 'float16-direct') assert.equal(casts, 1, 'only the logits cast to float32');
      if (kind === 'float16') assert.ok(casts > 2 * 6 * 5, `a Cast pair around each of the 30 linears (${casts})`);
      out[kind] = REF.prompts.slice(0, 2).map((p) => JSON.parse(must(tprun(['generate', '--engine', e, '--input-ids', p.input_ids.join(','),
        '--max-new-tokens', '12', '--ignore-eos', '--json', '--logits', '-q']).split('\n').find((l) => l.startsWith('{')), 'a JSON line')));
    }
    for (const kind of ['float16', 'float16-direct']) {
      for (let i = 0; i < 2; i++) {
        const a = out[kind][i].last_prompt_logits;
        const b = out.float32[i].last_prompt_logits;
        const rel = Math.sqrt(a.reduce((s, x, k) => s + (x - b[k]) ** 2, 0) / b.reduce((s, x) => s + x * x, 0));
        assert.ok(rel < 5e-3, `${kind} prompt ${i}: logits rel L2 ${rel}`);
        assert.deepEqual(out[kind][i].new_ids, out.float32[i].new_ids, `${kind} prompt ${i}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('TPRUN_INT4_FP16_DIRECT=1 (deprecated) still builds the Cast-free engine, saying once that the flag replaces it', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'int4-fp16-env-'));
  try {
    const e = join(dir, 'engine');
    const r = run(['build', '--model', MODEL, '--quant', 'int4_wo', '--dtype', 'float16', '--max-seq-len', '128', '--max-input-len', '64', '--out', e, '-q'], { TPRUN_INT4_FP16_DIRECT: '1' });
    assert.equal(r.stderr.match(/TPRUN_INT4_FP16_DIRECT=1 is deprecated; use build --int4-matmul-dtype auto/g)?.length, 1, r.stderr);
    assert.equal(JSON.parse(readFileSync(join(e, 'config.json'), 'utf8')).build_config.int4_matmul_dtype, 'auto');
    assert.equal(castNodes(readFileSync(join(e, 'rank0', 'seg0.onnx'))), 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
