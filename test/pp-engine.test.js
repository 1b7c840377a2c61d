// Pipeline parallelism through the CLI, float32 on the CPU: pp = 2 and pp = 3 of the 6-layer model
// (3 + 3 and 2 + 2 + 2 layers), real ranks started by the commands themselves, against transformers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, tprun, jsonLines } from './helpers/engine.js';
import { newMark, procsWithMark, startTprun, leftovers, waitFor, CLI } from './helpers/procs.js';
import { execFileSync, execFile } from 'node:child_process';
import { promisify } from 'node:util';

let mpirun;
try { mpirun = execFileSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' }).trim(); } catch { /* absent */ }
import { checkGreedy, checkPerplexity } from './helpers/pp.js';
import { must } from './helpers/must.js';

let dir;
const engines = {};
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-pp-'));
  for (const pp of [1, 2, 3]) {
    engines[pp] = join(dir, `pp${pp}`);
    const r = await tprun(['build', '--model', MODEL, '--pp', String(pp), '--out', engines[pp], '--max-seq-len', '512']);
    assert.equal(r.code, 0, r.stderr);
    if (pp > 1) assert.match(r.stdout, new RegExp(`${pp} rank\\(s\\) \\(tp 1 × pp ${pp}\\)`));
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('a pp engine records pp_size and gives each stage only its layers\' KV cache', () => {
  const cfg = JSON.parse(readFileSync(join(engines[3], 'config.json'), 'utf8'));
  assert.equal(cfg.pp_size, 3);
  assert.equal(cfg.tp_size, 1);
  assert.deepEqual(readdirSync(engines[3]).filter((f) => f.startsWith('rank')).sort(), ['rank0', 'rank1', 'rank2']);
  // Stage graphs declare past.0..past.1 only (2 layers each, numbered from 0 as in the checkpoint).
  for (const r of [0, 1, 2]) {
    const g = readFileSync(join(engines[3], `rank${r}`, 'seg0.onnx')).toString('latin1');
    assert.ok(g.includes('past.1.key') && !g.includes('past.2.key'), `rank ${r}`);
    assert.equal(g.includes('hidden_in'), r > 0, `rank ${r}: hidden_in`);
    assert.equal(g.includes('logits'), r === 2, `rank ${r}: logits`);
  }
});

for (const pp of [2, 3]) {
  test(`float32 pp=${pp}: four prompts give transformers' ids, logits and 24 greedy tokens (micro-batched)`, async () => {
    await checkGreedy(engines[pp]);
  });
  test(`float32 pp=${pp}: held-out perplexity within 0.5% of transformers`, async () => {
    await checkPerplexity(engines[pp]);
  });
}

test('pp=2, one prompt alone (one micro-batch): --input-ids agree with --prompt; the plain output names tp × pp', async () => {
  const r = await tprun(['generate', '--engine', engines[2], '--input-ids', REF.prompts[1].input_ids.join(','), '--max-new-tokens', '6']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith(`${REF.prompts[1].text}${REF.prompts[1].greedy_text.split(' ').slice(0, 4).join(' ')}`), r.stdout);
  assert.match(r.stderr, /tp 1 × pp 2 · load .* ms · prefill 8 tokens in .* decode .* ms\/step/);
});

test('seeded sampling on the last stage gives what pp 1 gives (temperature, top-k, top-p; 3 prompts in 2 and 3 micro-batches)', async () => {
  const run = async (pp, mb) => {
    const args = ['generate', '--engine', engines[pp], '--max-new-tokens', '16', '--ignore-eos', '--json', '--temperature', '0.9', '--top-k', '50', '--top-p', '0.95', '--seed', '7'];
    for (const p of REF.prompts.slice(0, 3)) args.push('--input-ids', p.input_ids.join(','));
    if (mb) args.push('--micro-batches', String(mb));
    const r = await tprun(args);
    assert.equal(r.code, 0, r.stderr);
    return jsonLines(r.stdout).map((o) => o.new_ids);
  };
  const want = await run(1);
  assert.notDeepEqual(want[0], REF.prompts[0].greedy_new_ids.slice(0, 16), 'sampling differs from greedy');
  assert.deepEqual(await run(2), want);
  assert.deepEqual(await run(3, 3), want);
});

test('pp 2 joins a world made by mpirun: stages are Open MPI ranks, rank 0 prints', { skip: !mpirun && 'mpirun not installed (apt-get install openmpi-bin)' }, async () => {
  const env = { ...process.env, TPRUN_QUIET: '1' };
  for (const k of Object.keys(env)) if (/^(TPRUN_(?!QUIET)|MASTER_|RANK$|WORLD_SIZE$)/.test(k)) delete env[k];
  const p = REF.prompts[2];
  const { stdout } = await promisify(execFile)(mpirun, ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, CLI, 'generate', '--engine', engines[2],
    '--input-ids', p.input_ids.join(','), '--max-new-tokens', '8', '--ignore-eos', '--json'], { timeout: 60000, env });
  const out = jsonLines(stdout);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].new_ids, p.greedy_new_ids.slice(0, 8));
});

test('a middle stage that dies mid-run takes the job down, named, with nothing left behind', async () => {
  const mark = newMark();
  const run = startTprun(['generate', '--engine', engines[3], '--input-ids', REF.prompts[0].input_ids.join(','), '--max-new-tokens', '480', '--ignore-eos'], { mark, env: { TPRUN_QUIET: '1' } });
  const rankOf = (pid) => { try { return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').find((e) => e.startsWith('TPRUN_RANK='))?.slice(11); } catch { return undefined; } };
  /** @type {number | undefined} */
  let victim;
  await waitFor(() => (victim = procsWithMark(mark).find((p) => rankOf(p.pid) === '1' && p.cmd.includes('generate'))?.pid) !== undefined, 60000, 'rank 1');
  // Let it get into the run (load, then the pipeline); wherever it is, the job must end.
  await new Promise((r) => setTimeout(r, 1500));
  process.kill(must(victim, 'rank 1'), 'SIGKILL');
  const res = await run.done;
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /rank 1 \(pid \d+\) killed by SIGKILL/);
  assert.deepEqual(await leftovers(mark), []);
});
