// No shared filesystem: the model exists only on the first host (the second host sees an empty directory
// where it lies), and `tprun build --model DIR --tp 4 --quant int4_awq` across both hosts still works,
// rank 0 quantizing and sending each rank its shard over the world. Each host ends with its own ranks'
// engines in its own view of the output directory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { makeHosts, whyNoHosts } from './helpers/netns.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist/cli.js');
const skip = whyNoHosts();
let H;
let base;

before(async () => {
  if (skip) return;
  base = mkdtempSync(join(tmpdir(), 'tprun-noshare-'));
  cpSync(join(ROOT, 'models/brown-llama-a'), join(base, 'model'), { recursive: true });
  // Host 1 gets an empty tmpfs over `base`: neither the model nor host 0's output is visible there.
  H = await makeHosts(2, { hide: [[], [base]] });
});

after(() => {
  H?.teardown();
  if (base) rmSync(base, { recursive: true, force: true });
});

const onHost = (h, cmd) => execFileSync('ip', ['netns', 'exec', H.head, 'ssh', ...H.sshArgs, h.addr, cmd], { encoding: 'utf8' });

test('tprun build --model --tp 4 --quant int4_awq with the model on the first host only', { skip }, async () => {
  const [A, B] = H.hosts;
  assert.equal(onHost(B, `ls -A ${base}`).trim(), '', 'host 1 must not see the model');
  const out = join(base, 'engine');
  const res = await execa('node', [CLI, '--hosts', `${A.addr}:2,${B.addr}:2`, '--quiet', '--',
    'node', CLI, 'build', '--model', join(base, 'model'), '--tp', '4', '--quant', 'int4_awq', '--group-size', '32', '--calib-samples', '8', '--out', out, '-q'],
  { env: H.env, reject: false, all: true, timeout: 300000 });
  assert.equal(res.exitCode, 0, res.all);
  // Each host holds a complete engine directory for its own ranks: config and tokenizer came from rank 0.
  const onA = readdirSync(out).filter((f) => /^rank\d+$|^config\.json$|^tokenizer\.json$/.test(f)).sort();
  const onB = onHost(B, `ls ${out}`).split('\n').filter((f) => /^rank\d+$|^config\.json$|^tokenizer\.json$/.test(f)).sort();
  assert.deepEqual(onA, ['config.json', 'rank0', 'rank1', 'tokenizer.json']);
  assert.deepEqual(onB, ['config.json', 'rank2', 'rank3', 'tokenizer.json']);
  assert.equal(onHost(B, `cat ${out}/config.json`), readFileSync(join(out, 'config.json'), 'utf8'));
  assert.equal(onHost(B, `ls -A ${base}`).trim(), 'engine', 'host 1 never got the model');
});
