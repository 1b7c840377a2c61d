// Bad pipeline-parallel input ends in exit 2 and one line; generate's new-token budget (issue 11 item 7):
// 0 new tokens print the prompt and nothing new, a prompt that fills max_seq_len is exit 2 naming the
// lengths, and a request beyond the room is capped and said so.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, tprun, jsonLines } from './helpers/engine.js';
import { CLI } from './helpers/procs.js';

const oneLine = (s) => s.trim().split('\n').filter((l) => l.trim() !== '');

let dir;
let ckpt;
let small;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-pp-err-'));
  ckpt = join(dir, 'ckpt-pp2');
  small = join(dir, 'small');
  let r = await tprun(['convert', '--model', MODEL, '--pp', '2', '--out', ckpt]);
  assert.equal(r.code, 0, r.stderr);
  // max_seq_len 12: room for exactly 4 new tokens after the 8-token reference prompt.
  r = await tprun(['build', '--model', MODEL, '--out', small, '--max-input-len', '12', '--max-seq-len', '12']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('--pp larger than the layer count: exit 2, one line, before any rank starts, nothing written', async () => {
  for (const cmd of ['convert', 'build']) {
    const out = join(dir, `bad-${cmd}`);
    const r = await tprun([cmd, '--model', MODEL, '--pp', '7', '--out', out]);
    assert.equal(r.code, 2, `${cmd}: ${r.stderr}`);
    const lines = oneLine(r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /--pp 7: more pipeline stages than the model's 6 layers/);
    assert.ok(!existsSync(out));
  }
});

test('--pp that is not a positive integer: exit 2, one line', async () => {
  const r = await tprun(['build', '--model', MODEL, '--pp', '0', '--out', join(dir, 'x')]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(oneLine(r.stderr).length, 1, r.stderr);
  assert.match(r.stderr, /--pp 0: must be a positive integer/);
});

test('tp × pp different from the world it runs in: exit 2 naming both sizes', async () => {
  const r = await tprun(['-n', '3', '--', process.execPath, CLI, 'build', '--model', MODEL, '--tp', '2', '--pp', '2', '--out', join(dir, 'w')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /needs 4 ranks but runs in a world of 3/);
  assert.deepEqual(r.left, []);
});

test('a checkpoint written for another pp: build --pp 3 of a pp 2 checkpoint is exit 2, one line', async () => {
  const r = await tprun(['build', '--checkpoint', ckpt, '--pp', '3', '--out', join(dir, 'e')]);
  assert.equal(r.code, 2, r.stderr);
  const lines = oneLine(r.stderr);
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /written for pp_size 2, not --pp 3/);
});

test('rank files of a pp 2 checkpoint under a config that says pp 1: exit 2 naming the file and tensor', async () => {
  const bad = join(dir, 'ckpt-lie');
  const r0 = await tprun(['convert', '--model', ckpt, '--format', 'tllm', '--pp', '2', '--out', bad]);
  assert.equal(r0.code, 0, r0.stderr);
  const cfgPath = join(bad, 'config.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  cfg.mapping = { world_size: 1, tp_size: 1, pp_size: 1 };
  writeFileSync(cfgPath, JSON.stringify(cfg));
  const r = await tprun(['build', '--checkpoint', bad, '--out', join(dir, 'e2')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /rank0\.safetensors: missing tensor transformer\.layers\.3\./);
});

test('generate --max-new-tokens 0: the prompt and nothing new, exit 0 (was exit 1 "token_ids must be a non-empty array")', async () => {
  const p = REF.prompts[1];
  let r = await tprun(['generate', '--engine', small, '--prompt', p.text, '--max-new-tokens', '0']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.split('\n')[0], p.text);
  r = await tprun(['generate', '--engine', small, '--prompt', p.text, '--max-new-tokens', '0', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [o] = jsonLines(r.stdout);
  assert.deepEqual(o.new_ids, []);
  assert.equal(o.text, '');
});

test('a prompt that fills max_seq_len: exit 2 naming both lengths', async () => {
  const ids = Array.from({ length: 12 }, (_, i) => REF.prompts[0].input_ids[i % REF.prompts[0].input_ids.length]);
  const r = await tprun(['generate', '--engine', small, '--input-ids', ids.join(','), '--max-new-tokens', '3']);
  assert.equal(r.code, 2, r.stderr);
  const lines = oneLine(r.stderr);
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /prompt 0 has 12 tokens, which fills the engine's max_seq_len 12/);
});

test('more new tokens than the room left: capped, the cap announced, the progress bar sized to it', async () => {
  const p = REF.prompts[1];
  assert.equal(p.input_ids.length, 8);
  const r = await tprun(['generate', '--engine', small, '--input-ids', p.input_ids.join(','), '--max-new-tokens', '1000000000', '--ignore-eos', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /--max-new-tokens 1000000000 capped to 4: the engine's max_seq_len 12 less the longest prompt's 8 tokens/);
  const [o] = jsonLines(r.stdout);
  assert.deepEqual(o.new_ids, p.greedy_new_ids.slice(0, 4));
  // The progress bar (as the launcher receives it) counts to the cap, not to 1e9.
  const bar = await tprun(['generate', '--engine', small, '--input-ids', p.input_ids.join(','), '--max-new-tokens', '1000000000', '--ignore-eos'], { env: { TPRUN_EVENTS: 'progress' } });
  assert.equal(bar.code, 0, bar.stderr);
  const totals = [...bar.stderr.matchAll(/"phase":"generate"[^\n]*?"total":(\d+)/g)].map((m) => Number(m[1]));
  assert.ok(totals.length > 0, bar.stderr);
  assert.deepEqual([...new Set(totals)], [4]);
});
