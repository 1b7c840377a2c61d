// tprun -n N: the environment each rank gets, GPU binding, -x, and ports of concurrent jobs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTprun, startTprun, newMark, leftovers } from './helpers/procs.js';

const VARS = [
  'TPRUN_RANK', 'TPRUN_WORLD_SIZE', 'TPRUN_LOCAL_RANK', 'TPRUN_LOCAL_WORLD_SIZE', 'TPRUN_NODE_RANK',
  'TPRUN_MASTER_ADDR', 'TPRUN_MASTER_PORT', 'TPRUN_JOB_ID', 'TPRUN_SECRET',
  'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
  'CUDA_VISIBLE_DEVICES', 'FOO', 'BAR', 'INHERITED', 'OMPI_COMM_WORLD_RANK',
];
// Each rank prints one line `NAME=VALUE|NAME=VALUE...` (unset variables as NAME=<unset>).
const PRINT_ENV = ['sh', '-c', VARS.map((v) => `printf '%s=%s|' ${v} "\${${v}-<unset>}"`).join('; ') + "; echo"];

function parseRanks(stdout) {
  return stdout
    .trim()
    .split('\n')
    .map((line) => Object.fromEntries(line.replace(/\|$/, '').split('|').map((kv) => kv.split(/=(.*)/s).slice(0, 2))));
}

const baseEnv = { CUDA_VISIBLE_DEVICES: '', FOO: undefined, BAR: undefined, INHERITED: 'yes', OMPI_COMM_WORLD_RANK: '7' };

test('every rank gets its identity, one shared rendezvous and a 64-hex secret', async () => {
  const r = await runTprun(['-n', '3', '--gpus', 'none', '--', ...PRINT_ENV], { env: baseEnv });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.left, []);
  const ranks = parseRanks(r.stdout).sort((a, b) => a.TPRUN_RANK - b.TPRUN_RANK);
  assert.deepEqual(ranks.map((e) => e.TPRUN_RANK), ['0', '1', '2']);
  for (const [i, e] of ranks.entries()) {
    assert.equal(e.RANK, String(i));
    assert.equal(e.TPRUN_LOCAL_RANK, String(i));
    assert.equal(e.LOCAL_RANK, String(i));
    for (const k of ['TPRUN_WORLD_SIZE', 'WORLD_SIZE', 'TPRUN_LOCAL_WORLD_SIZE', 'LOCAL_WORLD_SIZE']) assert.equal(e[k], '3', k);
    assert.equal(e.TPRUN_NODE_RANK, '0');
    assert.equal(e.TPRUN_MASTER_ADDR, '127.0.0.1');
    assert.equal(e.MASTER_ADDR, '127.0.0.1');
    assert.equal(e.MASTER_PORT, e.TPRUN_MASTER_PORT);
    assert.match(e.TPRUN_SECRET, /^[0-9a-f]{64}$/);
    assert.match(e.TPRUN_JOB_ID, /^[0-9a-f]+$/);
    for (const k of ['TPRUN_MASTER_PORT', 'TPRUN_SECRET', 'TPRUN_JOB_ID']) assert.equal(e[k], ranks[0][k], `${k} differs between ranks`);
    assert.ok(Number(e.TPRUN_MASTER_PORT) > 1024 && Number(e.TPRUN_MASTER_PORT) < 65536);
    // The launcher's environment is inherited; another launcher's identity is not.
    assert.equal(e.INHERITED, 'yes');
    assert.equal(e.OMPI_COMM_WORLD_RANK, '<unset>');
    assert.equal(e.CUDA_VISIBLE_DEVICES, '', '--gpus none leaves CUDA_VISIBLE_DEVICES as it was');
  }
  // Secrets travel in the environment only, never in output of the launcher.
  assert.ok(!r.stderr.includes(ranks[0].TPRUN_SECRET));
});

test('--gpus binds one device per rank; -x sets and forwards variables', async () => {
  const r = await runTprun(['-n', '2', '--gpus', '3,5', '-x', 'FOO=bar baz', '-x', 'BAR', '--', ...PRINT_ENV], {
    env: { ...baseEnv, BAR: 'from-launcher' },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.left, []);
  const ranks = parseRanks(r.stdout).sort((a, b) => a.TPRUN_RANK - b.TPRUN_RANK);
  assert.deepEqual(ranks.map((e) => e.CUDA_VISIBLE_DEVICES), ['3', '5']);
  assert.deepEqual(ranks.map((e) => e.FOO), ['bar baz', 'bar baz']);
  assert.deepEqual(ranks.map((e) => e.BAR), ['from-launcher', 'from-launcher']);
});

test('--gpus auto takes the devices of an inherited CUDA_VISIBLE_DEVICES, round-robin', async () => {
  const r = await runTprun(['-n', '3', '--', ...PRINT_ENV], { env: { ...baseEnv, CUDA_VISIBLE_DEVICES: '6,2' } });
  assert.equal(r.code, 0, r.stderr);
  const ranks = parseRanks(r.stdout).sort((a, b) => a.TPRUN_RANK - b.TPRUN_RANK);
  assert.deepEqual(ranks.map((e) => e.CUDA_VISIBLE_DEVICES), ['6', '2', '6']);
});

test('--gpus auto without CUDA_VISIBLE_DEVICES asks nvidia-smi -L: one device per listed GPU, round-robin', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-smi-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A stand-in for nvidia-smi on PATH that lists two GPUs, as `nvidia-smi -L` prints them.
  writeFileSync(join(dir, 'nvidia-smi'), '#!/bin/sh\n[ "$1" = -L ] || exit 1\necho "GPU 0: NVIDIA H200 (UUID: GPU-a)"\necho "GPU 1: NVIDIA H200 (UUID: GPU-b)"\n', { mode: 0o755 });
  const r = await runTprun(['-n', '3', '--', ...PRINT_ENV], { env: { ...baseEnv, CUDA_VISIBLE_DEVICES: undefined, PATH: `${dir}:${process.env.PATH}` } });
  assert.equal(r.code, 0, r.stderr);
  const ranks = parseRanks(r.stdout).sort((a, b) => a.TPRUN_RANK - b.TPRUN_RANK);
  assert.deepEqual(ranks.map((e) => e.CUDA_VISIBLE_DEVICES), ['0', '1', '0']);
  // Without nvidia-smi (or when it fails) no rank is bound.
  const none = await runTprun(['-n', '2', '--', ...PRINT_ENV], { env: { ...baseEnv, CUDA_VISIBLE_DEVICES: undefined, PATH: '/usr/bin:/bin' } });
  assert.equal(none.code, 0, none.stderr);
  assert.deepEqual(parseRanks(none.stdout).map((e) => e.CUDA_VISIBLE_DEVICES), ['<unset>', '<unset>']);
});

test('two jobs running at the same time get different rendezvous ports', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-ports-test-'));
  try {
    // Each job's rank 0 prints its port, then waits until the other job's rank 0 has printed too, so
    // both jobs provably hold their ports at the same moment.
    const rank = (me, other) => [
      'sh', '-c',
      `[ "$TPRUN_RANK" = 0 ] && echo "$MASTER_PORT" > ${dir}/${me}; echo "$MASTER_PORT"; ` +
        `while [ ! -e ${dir}/${other} ]; do sleep 0.05; done`,
    ];
    const mark = newMark();
    const a = startTprun(['-n', '2', '--gpus', 'none', '--', ...rank('a', 'b')], { mark });
    const b = startTprun(['-n', '2', '--gpus', 'none', '--', ...rank('b', 'a')], { mark });
    const [ra, rb] = await Promise.all([a.done, b.done]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    const pa = new Set(ra.stdout.trim().split('\n'));
    const pb = new Set(rb.stdout.trim().split('\n'));
    assert.equal(pa.size, 1);
    assert.equal(pb.size, 1);
    assert.notEqual([...pa][0], [...pb][0]);
    assert.deepEqual(await leftovers(mark), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--secure gives every rank the same CurveZMQ server key pair (z85); without it there is none', async () => {
  const show = ['sh', '-c', 'echo "${TPRUN_CURVE_SERVER_PUBLIC-none} ${TPRUN_CURVE_SERVER_SECRET-none}"'];
  const s = await runTprun(['-n', '2', '--gpus', 'none', '--secure', '--', ...show]);
  assert.equal(s.code, 0, s.stderr);
  const lines = s.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  assert.equal(lines[0], lines[1]);
  const [pub, sec] = lines[0].split(' ');
  assert.match(pub, /^[0-9A-Za-z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/);
  assert.match(sec, /^[0-9A-Za-z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/);
  assert.notEqual(pub, sec);
  const plain = await runTprun(['-n', '1', '--gpus', 'none', '--', ...show]);
  assert.equal(plain.stdout, 'none none\n');
});
