// Pipeline parallelism on the WGSL kernels (--kernels wgsl at pp > 1): each stage's ranks run their layers
// on their own Dawn device, the first embeds, the last holds ln_f + lm_head, and the hidden states cross
// the host once per stage boundary per pass (read back, sent, written into the next stage's residual
// stream). Checked on Mesa's lavapipe against the same engine on the CPU (onnxruntime) and transformers,
// with real ranks (the commands start tp × pp of them); small engines and few tokens, as lavapipe is slow.
// Where Dawn finds no adapter the tests skip with the reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { MODEL, REF, relL2, relDiff, tprun, jsonLines } from './helpers/engine.js';
import { newMark, procsWithMark, startTprun, leftovers, waitFor } from './helpers/procs.js';
import { must } from './helpers/must.js';

const NEW = 8;
/** Hang guards for a loaded 2-core machine (no timing is asserted). */
const LONG = { timeoutMs: 600_000 };
const SLOW = { timeout: 1_800_000 };
const PROMPTS = REF.prompts.slice(0, 2);
let dir;
let noAdapter;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-wgsl-pp-'));
  try {
    const probe = "import('webgpu').then(async ({ create, globals }) => { Object.assign(globalThis, globals); const a = await create([]).requestAdapter(); process.stdout.write(a ? 'ok' : 'none'); process.exit(0); })";
    noAdapter = execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) === 'ok' ? null : 'Dawn finds no WebGPU adapter';
  } catch (e) {
    noAdapter = `Dawn does not start here (${String(e.message).split('\n')[0]})`;
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

const built = new Map();
async function build(name, args) {
  if (built.has(name)) return built.get(name);
  const out = join(dir, name);
  const r = await tprun(['build', '--model', MODEL, '--dtype', 'float16', ...args, '--out', out, '--max-seq-len', '128', '--max-input-len', '64'], { timeoutMs: 900_000 });
  assert.equal(r.code, 0, r.stderr);
  built.set(name, out);
  return out;
}

/** Two prompts (two micro-batches at pp 2, by default), NEW greedy tokens and the last prompt logits. */
async function generate(engine, extra, env) {
  const args = ['generate', '--engine', engine, '--max-new-tokens', String(NEW), '--json', '--logits', '--ignore-eos', ...extra];
  for (const p of PROMPTS) args.push('--input-ids', p.input_ids.join(','));
  const r = await tprun(args, { ...LONG, ...(env ? { env } : {}) });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.left, [], 'no process left behind');
  return jsonLines(r.stdout);
}

/** The WGSL run of `engine` against the CPU engine's (onnxruntime) greedy tokens and logits; returns both. */
async function againstCpu(name, engine, ranks, extra = []) {
  const [g, c] = [await generate(engine, ['--kernels', 'wgsl', ...extra]), await generate(engine, ['--device', 'cpu', ...extra])];
  assert.equal(g.length, PROMPTS.length);
  assert.equal(g[0].ranks.map((r) => r.kernels).join('/'), Array(ranks).fill('wgsl').join('/'), `${name}: every rank runs the WGSL kernels`);
  PROMPTS.forEach((p, b) => {
    assert.deepEqual(g[b].prompt_ids, p.input_ids);
    assert.deepEqual(g[b].new_ids, c[b].new_ids, `${name} prompt ${b}: WGSL and CPU engines disagree`);
    // The tolerance of the pp 1 tests (engine-wgsl.test.js): float32 accumulation and activations in WGSL
    // against the float16 engine's half activations between ops on the CPU.
    const err = relL2(g[b].last_prompt_logits, c[b].last_prompt_logits);
    assert.ok(err < 1e-3, `${name} prompt ${b}: relative L2 ${err} from the CPU engine's logits`);
  });
  return { g, c };
}

test('float16 pp 2 and tp 2 × pp 2 on WGSL: greedy tokens equal the CPU engine\'s and transformers\', logits within the pp 1 tolerances', SLOW, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  for (const [name, args, ranks] of [['fp16-pp2', ['--pp', '2'], 2], ['fp16-tp2-pp2', ['--tp', '2', '--pp', '2'], 4]]) {
    const { g } = await againstCpu(name, await build(name, args), ranks);
    PROMPTS.forEach((p, b) => {
      assert.deepEqual(g[b].new_ids, p.greedy_new_ids.slice(0, NEW), `${name} prompt ${b}: not transformers' greedy tokens`);
      const err = relL2(g[b].last_prompt_logits, p.last_logits);
      assert.ok(err < 2e-4, `${name} prompt ${b}: relative L2 error ${err} against transformers' float32 logits`);
    });
  }
  // One micro-batch of both prompts (rows one after another in each stage's pass) gives the same.
  const pp2 = await build('fp16-pp2', ['--pp', '2']);
  const one = await generate(pp2, ['--kernels', 'wgsl', '--micro-batches', '1']);
  PROMPTS.forEach((p, b) => assert.deepEqual(one[b].new_ids, p.greedy_new_ids.slice(0, NEW), `one micro-batch, prompt ${b}`));
  // Sampling: the last stage reads the logits back and samples on the host as the CPU engine does (same seed).
  const sampled = ['--temperature', '0.8', '--top-k', '40', '--seed', '3'];
  const [gs, cs] = [await generate(pp2, ['--kernels', 'wgsl', ...sampled]), await generate(pp2, ['--device', 'cpu', ...sampled])];
  PROMPTS.forEach((_, b) => assert.deepEqual(gs[b].new_ids, cs[b].new_ids, `sampled, prompt ${b}`));
});

test('int4_wo pp 2 and tp 2 × pp 2 on WGSL: greedy tokens equal the CPU engine\'s, logits within 1e-3', SLOW, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  // --int4-accuracy-level 0: the CPU engine computes in float as the WGSL kernels do (engine-wgsl.test.js).
  const q = ['--quant', 'int4_wo', '--int4-accuracy-level', '0'];
  await againstCpu('int4-pp2', await build('int4-pp2', [...q, '--pp', '2']), 2);
  await againstCpu('int4-tp2-pp2', await build('int4-tp2-pp2', [...q, '--tp', '2', '--pp', '2']), 4);
});

test('perplexity at pp 2 on WGSL: the windows stream through the stages and score as on the CPU', SLOW, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const engine = await build('fp16-pp2', ['--pp', '2']);
  const run = async (extra) => {
    const r = await tprun(['perplexity', '--engine', engine, '--max-tokens', '128', '--window', '32', '--json', ...extra], LONG);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.left, []);
    return jsonLines(r.stdout)[0];
  };
  const [g, c] = [await run(['--kernels', 'wgsl']), await run(['--device', 'cpu'])];
  assert.equal(g.tokens, 128);
  assert.ok(relDiff(g.ppl, c.ppl) < 1e-3, `ppl ${g.ppl} (WGSL) against ${c.ppl} (CPU)`);
});

test('--kernels auto picks WGSL at pp 2 (and tp 2 × pp 2) on a GPU device, onnxruntime for the CPU', SLOW, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const kernels = async (engine, extra) => {
    const r = await tprun(['generate', '--engine', engine, '--max-new-tokens', '2', '--json', '--ignore-eos', '--input-ids', PROMPTS[0].input_ids.join(','), ...extra], LONG);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.left, []);
    const [o] = jsonLines(r.stdout);
    assert.deepEqual(o.new_ids, PROMPTS[0].greedy_new_ids.slice(0, 2));
    return o.ranks.map((x) => x.kernels).join('/');
  };
  const pp2 = await build('fp16-pp2', ['--pp', '2']);
  assert.equal(await kernels(pp2, ['--device', 'gpu']), 'wgsl/wgsl');
  assert.equal(await kernels(pp2, []), 'ort/ort', 'an engine built for the CPU stays there without --device');
  assert.equal(await kernels(await build('fp16-tp2-pp2', ['--tp', '2', '--pp', '2']), ['--device', 'gpu']), 'wgsl/wgsl/wgsl/wgsl');
});

test('a last stage that dies mid-generation takes the job down, named, with nothing left behind', SLOW, async (t) => {
  if (noAdapter) return t.skip(noAdapter);
  const engine = await build('fp16-pp2', ['--pp', '2']);
  const mark = newMark();
  // 100 new tokens: tens of seconds of decode on lavapipe, so a kill a few seconds after the rank opened its
  // device lands in generation (and wherever it lands, the job must end).
  const run = startTprun(['generate', '--engine', engine, '--kernels', 'wgsl', '--input-ids', PROMPTS[0].input_ids.join(','), '--max-new-tokens', '100', '--ignore-eos'], { mark, env: { TPRUN_QUIET: '1' } });
  const rankOf = (pid) => { try { return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').find((e) => e.startsWith('TPRUN_RANK='))?.slice(11); } catch { return undefined; } };
  /** @type {number | undefined} */
  let victim;
  await waitFor(() => (victim = procsWithMark(mark).find((p) => rankOf(p.pid) === '1' && p.cmd.includes('generate'))?.pid) !== undefined, 120_000, 'rank 1');
  // Its Vulkan driver mapped: the rank has opened its device (it loads, then the pipeline starts).
  const opened = () => {
    let maps;
    try { maps = readFileSync(`/proc/${victim}/maps`, 'latin1'); } catch { throw new Error('rank 1 ended before it opened its device'); }
    return /libvulkan/.test(maps);
  };
  await waitFor(opened, 120_000, 'rank 1 to open its device');
  await new Promise((r) => setTimeout(r, 4000));
  process.kill(must(victim, 'rank 1'), 'SIGKILL');
  const res = await run.done;
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /rank 1 \(pid \d+\) killed by SIGKILL/);
  assert.equal(res.stdout, '', 'no partial output');
  assert.deepEqual(await leftovers(mark), []);
});

test('a stage given the other end\'s input is refused by name before anything runs (no GPU: the runner\'s checks alone)', async () => {
  const { WgslRunner } = await import('../dist/engine/wgsl/runner.js');
  /** A runner with only what the checks read: its stage, hidden size, head (last stage) and activations' size. */
  const stage = (/** @type {boolean} */ first) => Object.assign(Object.create(WgslRunner.prototype), {
    shape: { first }, d: { H: 4 }, head: {}, a: { maxT: 8 }, gpu: { device: { queue: {} } },
  });
  const req = { batch: 1, seq: 1, npos: 1, totalSeq: 1, ids: [5], positions: [0], seqlensK: [0] };
  const cache = /** @type {any} */ ({ capacity: 8 });
  const FIRST = { message: /^the first pipeline stage starts from token ids, not hidden states$/ };
  const LATER = { message: /^a later pipeline stage starts from the previous stage's hidden states, not token ids$/ };
  await assert.rejects(stage(true).forwardStage(req, cache, new Float32Array(4)), FIRST);
  await assert.rejects(stage(true).greedyStage(req, cache, new Float32Array(4)), FIRST);
  await assert.rejects(stage(false).forwardStage(req, cache), LATER);
  await assert.rejects(stage(false).greedyStage(req, cache), LATER);
  await assert.rejects(stage(false).forwardRow(cache, 0, [5], 0, [0]), LATER);
  await assert.rejects(stage(false).decodeGreedy(cache, 0, 5, 0), LATER);
});
