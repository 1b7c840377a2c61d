// Issue #13, "Output a person and a pipe can use": stdout carries the result and nothing else (stats go
// to stderr and obey -q), --json leaves out the logits unless --logits, ANSI codes only for a person's
// terminal (NO_COLOR, ranks under mpirun), no autowrap switched off by the bar, options that are not
// numbers named as typed, and a checkpoint given as an engine named for what it is.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from '../helpers/procs.js';
import { generateCheckpoint } from 'tprun';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BROWN = path.join(ROOT, 'models/brown-llama-a');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tprun-outcli-'));
test.after(() => fs.rmSync(work, { recursive: true, force: true }));

const MODEL = path.join(work, 'model');
const CKPT = path.join(work, 'ckpt');
const ENGINE = path.join(work, 'engine');
generateCheckpoint({ preset: 'brown', layers: 1, out: MODEL, seed: 4 });

function env(extra = {}) {
  const e = { ...process.env, ...extra };
  for (const k of ['NO_COLOR', 'FORCE_COLOR', 'TPRUN_QUIET']) if (!(k in extra)) delete e[k];
  return e;
}

function tprun(args, extra = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300000, env: env(extra) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs under a pseudo-terminal (util-linux `script`): what a person at a terminal sees, raw. */
function onTerminal(args, extra = {}) {
  const cmd = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 300000, env: env(extra) });
  return { code: r.status, out: r.stdout ?? '', error: r.error };
}

const hasScript = spawnSync('script', ['--version']).status === 0;
const GEN = ['generate', '--engine', ENGINE, '--prompt', 'The jury said', '--prompt', 'It was', '--max-new-tokens', '3'];

test('setup: a checkpoint and a one-rank engine with a tokenizer', () => {
  assert.equal(tprun(['convert', '--model', MODEL, '--out', CKPT]).code, 0);
  const r = tprun(['build', '--checkpoint', CKPT, '--tokenizer', BROWN, '--max-seq-len', '64', '--max-input-len', '32', '--out', ENGINE]);
  assert.equal(r.code, 0, r.stderr);
});

test('generate: stdout is one line per prompt; the stats go to stderr, and -q drops them', () => {
  let r = tprun(GEN);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2, r.stdout);
  assert.match(lines[0], /^The jury said/);
  assert.doesNotMatch(r.stdout, /tokens\/s|load \d/);
  assert.match(r.stderr, /tp 1 · load .* tokens\/s/);
  r = tprun([...GEN, '-q']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 2);
  assert.equal(r.stderr, '');
});

test('generate --json: last_prompt_logits only with --logits', () => {
  let r = tprun([...GEN, '--json']);
  assert.equal(r.code, 0, r.stderr);
  let rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.length, 2);
  for (const o of rows) {
    assert.ok(!('last_prompt_logits' in o), 'no logits without --logits');
    assert.equal(o.new_ids.length, 3);
  }
  r = tprun([...GEN, '--json', '--logits']);
  assert.equal(r.code, 0, r.stderr);
  rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  for (const o of rows) assert.equal(o.last_prompt_logits.length, 4096);
});

test('ANSI codes: bold text on a terminal; none with NO_COLOR, none for a rank under mpirun; autowrap left on', { skip: !hasScript && 'needs util-linux script' }, () => {
  const plain = onTerminal(GEN);
  assert.equal(plain.code, 0, plain.out);
  assert.match(plain.out, /\x1b\[1m/, 'a person at a terminal gets the generated text in bold');
  assert.doesNotMatch(plain.out, /\x1b\[\?7l/, 'line wrapping is never switched off');
  const noColor = onTerminal(GEN, { NO_COLOR: '1' });
  assert.equal(noColor.code, 0, noColor.out);
  assert.doesNotMatch(noColor.out, /\x1b\[1m/);
  // A one-rank Open MPI world: its stdout is mpirun's pseudo-terminal, not evidence of a person.
  const mpi = onTerminal(GEN, { OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '1', OMPI_COMM_WORLD_LOCAL_RANK: '0', OMPI_COMM_WORLD_LOCAL_SIZE: '1' });
  assert.equal(mpi.code, 0, mpi.out);
  assert.match(mpi.out, /The jury said/);
  assert.doesNotMatch(mpi.out, /\x1b\[1m/);
});

test('a number option given a word is named as typed (not NaN), exit 2, one line', () => {
  for (const args of [
    ['build', '--model', MODEL, '--tp', 'two', '--out', path.join(work, 'x')],
    ['convert', '--model', MODEL, '--tp', 'two', '--out', path.join(work, 'x')],
    ['generate', '--engine', ENGINE, '--prompt', 'a', '--max-new-tokens=many'],
  ]) {
    const r = tprun(args);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^tprun( \w+)?: (--tp two|--max-new-tokens many): not a number$/m);
    assert.doesNotMatch(r.stderr, /NaN/);
  }
});

test('generate --engine on a checkpoint or a HF model says what it is and what to run', () => {
  let r = tprun(['generate', '--engine', CKPT, '--prompt', 'a']);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim(), `tprun: ${CKPT}: a TensorRT-LLM checkpoint, not an engine; build one with: tprun build --checkpoint ${CKPT} --out ENGINE_DIR`);
  r = tprun(['perplexity', '--engine', MODEL]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr.trim(), new RegExp(`^tprun: ${MODEL}: a Hugging Face model, not an engine; build one with: tprun build --model ${MODEL} --out ENGINE_DIR$`));
});
