// Command lines as mpirun and torchrun users type them, a mistyped subcommand, and an ssh host that
// cannot be reached: each gives what the user meant, or one line saying what is wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTprun } from '../helpers/procs.js';

const WHO = ['sh', '-c', 'echo "$TPRUN_RANK/$TPRUN_WORLD_SIZE local $TPRUN_LOCAL_RANK/$TPRUN_LOCAL_WORLD_SIZE node $TPRUN_NODE_RANK"'];
const sorted = (out) => out.trim().split('\n').sort();

test('mpirun and torchrun spellings are aliases of -n and --hosts', async () => {
  const cases = [
    [['-np', '3', '--gpus', 'none', '--', ...WHO], ['0/3 local 0/3 node 0', '1/3 local 1/3 node 0', '2/3 local 2/3 node 0']],
    [['--np=2', '--gpus', 'none', '--', ...WHO], ['0/2 local 0/2 node 0', '1/2 local 1/2 node 0']],
    // Open MPI's host lists: one slot per mention, or host:slots; repeated hosts add up.
    [['-H', 'localhost,localhost', '--gpus', 'none', '--', ...WHO], ['0/2 local 0/2 node 0', '1/2 local 1/2 node 0']],
    [['-host', 'localhost:1', '--host', '127.0.0.1:2', '--gpus', 'none', '--', ...WHO], ['0/3 local 0/1 node 0', '1/3 local 0/2 node 1', '2/3 local 1/2 node 1']],
    // torchrun: ranks per node, the first --nnodes hosts, and node rank 0 (this launcher starts them all).
    [['--nproc-per-node', '2', '--nnodes', '1', '--node-rank', '0', '--gpus', 'none', '--', ...WHO], ['0/2 local 0/2 node 0', '1/2 local 1/2 node 0']],
    [['--nproc_per_node=2', '--nnodes=2', '--host', 'localhost:5,127.0.0.1:5,other-host:5', '--gpus', 'none', '--', ...WHO],
      ['0/4 local 0/2 node 0', '1/4 local 1/2 node 0', '2/4 local 0/2 node 1', '3/4 local 1/2 node 1']],
    // Without `--` (the full command-line parser).
    [['-np', '2', '--gpus', 'none', 'echo', 'hi'], ['hi', 'hi']],
  ];
  for (const [args, want] of cases) {
    const r = await runTprun(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.deepEqual(sorted(r.stdout), want, args.join(' '));
    assert.deepEqual(r.left, []);
  }
});

test('torchrun options that tprun cannot honour: one line naming the option, exit 2', async () => {
  /** @type {[string[], RegExp][]} */
  const cases = [
    [['--nnodes', '2', '--', 'true'], /^tprun: --nnodes 2: name the nodes with --hostfile or --host/],
    [['--node-rank', '1', '--', 'true'], /^tprun: --node-rank 1: tprun starts the ranks of every node from one launcher/],
    [['--nnodes', '3', '-H', 'localhost,127.0.0.1', '--', 'true'], /^tprun: --nnodes 3: --host lists only 2 host\(s\)/],
    [['--nproc-per-node', '0', '--', 'true'], /^tprun: --nproc-per-node must be a positive integer/],
  ];
  for (const [args, re] of cases) {
    const r = await runTprun(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stdout, '');
  }
});

test('a mistyped subcommand is answered with the command meant, exit 2; programs still run', async () => {
  for (const [word, meant] of [['conver', 'convert'], ['genrate', 'generate'], ['buidl', 'build']]) {
    const r = await runTprun([word, '--model', 'x']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `tprun: unknown command '${word}': did you mean ${meant}? (to run a program of that name: tprun -- ${word})\n`);
    assert.equal(r.stdout, '');
  }
  // `tprun -- conver` runs a program of that name (here none), and so does `tprun prog` when prog exists.
  const dash = await runTprun(['--', 'conver']);
  assert.equal(dash.code, 127);
  assert.match(dash.stderr, /^tprun: rank 0: cannot run 'conver' \(ENOENT\)$/m);
  const dir = mkdtempSync(join(tmpdir(), 'tprun-conv-'));
  try {
    writeFileSync(join(dir, 'conver'), '#!/bin/sh\necho ran conver "$@"\n');
    chmodSync(join(dir, 'conver'), 0o755);
    const prog = await runTprun(['conver', 'a'], { env: { PATH: `${dir}:${process.env.PATH}` } });
    assert.equal(prog.code, 0, prog.stderr);
    assert.equal(prog.stdout, 'ran conver a\n');
    const echo = await runTprun(['echo', 'hi']);
    assert.equal(echo.stdout, 'hi\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an ssh host that cannot be reached: the last line names the host', async () => {
  // A name that never resolves, and an address where nothing listens on the port (no sshd needed).
  const dns = await runTprun(['--hosts', 'tprun-no-such-host.invalid:1', '--', 'true']);
  assert.equal(dns.code, 255);
  assert.match(dns.stderr, /\ntprun: rank 0: cannot reach tprun-no-such-host\.invalid over ssh \(exit 255\)\n$/);
  // With a local rank 0 the launcher resolves the host first (the address remote ranks reach it by).
  const mixed = await runTprun(['--hosts', 'localhost:1,tprun-no-such-host.invalid:1', '--', 'true']);
  assert.equal(mixed.code, 2);
  assert.match(mixed.stderr, /^tprun: cannot resolve host tprun-no-such-host\.invalid: [A-Z_]+\n$/);
  const refused = await runTprun(['--hosts', '127.0.0.2:1', '--', 'true'], { env: { TPRUN_SSH_ARGS: '-p 1' } });
  assert.equal(refused.code, 255);
  assert.match(refused.stderr, /\ntprun: rank 0: cannot reach 127\.0\.0\.2 over ssh \(exit 255\)\n$/);
  assert.deepEqual(refused.left, []);
  // ssh failing silently (or the remote command exiting 255): the line still names the host.
  const dir = mkdtempSync(join(tmpdir(), 'tprun-ssh-'));
  try {
    writeFileSync(join(dir, 'ssh'), '#!/bin/sh\nexit 255\n');
    chmodSync(join(dir, 'ssh'), 0o755);
    const silent = await runTprun(['--hosts', 'some-host:1', '--', 'true'], { env: { TPRUN_SSH: join(dir, 'ssh') } });
    assert.equal(silent.code, 255);
    assert.match(silent.stderr, /^tprun: rank 0 \(pid \d+\) on some-host exited with code 255 \(also ssh's code when it cannot reach or log in to some-host\)\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
