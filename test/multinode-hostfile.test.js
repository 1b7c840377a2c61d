// Placement input (hostfiles, --hosts), Slurm node lists and the remote shell quoting: pure functions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseHostfile, parseHostsArg, mapBySlot, PlacementError } from '../dist/launcher/hostfile.js';
import { shellQuote, shellWords, sshCommand, remoteScript } from '../dist/launcher/remote.js';
import { expandNodelist } from '../dist/rank/slurm-nodelist.js';

test('hostfile: Open MPI syntax with comments, blank lines, defaults and max_slots', () => {
  const text = [
    '# cluster',
    '',
    'node1 slots=2',
    'node2   slots=4 max_slots=8   # trailing comment',
    '  node3',
    'user@node4 max-slots=3',
    'node1 slots=1', // repeated hosts add up, as in Open MPI
    '10.0.0.7 slots:2',
  ].join('\n');
  assert.deepEqual(parseHostfile(text, 'hosts.txt'), [
    { host: 'node1', slots: 3 },
    { host: 'node2', slots: 4, maxSlots: 8 },
    { host: 'node3', slots: 1 },
    { host: 'user@node4', slots: 3, maxSlots: 3 },
    { host: '10.0.0.7', slots: 2 },
  ]);
});

test('hostfile: errors name file and line', () => {
  const bad = (text, re) => assert.throws(() => parseHostfile(text, 'hf'), (e) => e instanceof PlacementError && e.exitCode === 2 && re.test(e.message));
  bad('a slots=2\nb slots=zero\n', /^hf:2: slots must be a positive integer, got 'zero'/);
  bad('a\n\n# c\nb slots=0', /^hf:4: slots must be/);
  bad('a sluts=2', /^hf:1: unknown attribute 'sluts'/);
  bad('a slots=2 slots=3', /^hf:1: slots given twice/);
  bad('a slots=4 max_slots=2', /^hf:1: max_slots=2 is less than slots=4/);
  bad('a junk', /^hf:1: cannot read 'junk'/);
  bad('-oProxyCommand=x slots=1', /^hf:1: bad host name/);
  bad('a$(id) slots=1', /^hf:1: bad host name/);
  bad('# only comments\n\n', /^hf: no hosts/);
});

test('--hosts a:2,b:2 and mapping by slot', () => {
  const hosts = parseHostsArg('a:2,b:2,c');
  assert.deepEqual(hosts, [{ host: 'a', slots: 2 }, { host: 'b', slots: 2 }, { host: 'c', slots: 1 }]);
  assert.deepEqual(mapBySlot(hosts, 4), [0, 0, 1, 1]);
  assert.deepEqual(mapBySlot(hosts, 5), [0, 0, 1, 1, 2]);
  assert.deepEqual(mapBySlot(hosts, 1), [0]);
  assert.throws(() => mapBySlot(hosts, 6), /-n 6 needs 6 slots but the hosts give 5/);
  assert.throws(() => parseHostsArg('a:2,,b'), /--hosts: empty host/);
  assert.throws(() => parseHostsArg('a:0'), /--hosts: slots of a must be a positive integer/);
  assert.throws(() => parseHostsArg('a b:1'), /--hosts: bad host name 'a b'/);
  assert.deepEqual(parseHostsArg('root@10.1.2.3:4'), [{ host: 'root@10.1.2.3', slots: 4 }]);
});

test('Slurm node lists expand like `scontrol show hostnames`', () => {
  assert.deepEqual(expandNodelist('node[01-03,07],gpu-a[1-2]'), ['node01', 'node02', 'node03', 'node07', 'gpu-a1', 'gpu-a2']);
  assert.deepEqual(expandNodelist('n1'), ['n1']);
  assert.deepEqual(expandNodelist('a,b,c'), ['a', 'b', 'c']);
  assert.deepEqual(expandNodelist('n[8-10]'), ['n8', 'n9', 'n10']);
  assert.deepEqual(expandNodelist('n[098-101]'), ['n098', 'n099', 'n100', 'n101']);
  assert.deepEqual(expandNodelist('r[1-2]-n[1-2]'), ['r1-n1', 'r1-n2', 'r2-n1', 'r2-n2']);
  assert.deepEqual(expandNodelist('x[3],y'), ['x3', 'y']);
  assert.deepEqual(expandNodelist('10.0.0.[2-3]'), ['10.0.0.2', '10.0.0.3']);
  assert.deepEqual(expandNodelist(''), []);
  assert.throws(() => expandNodelist('n[1-'), /bad Slurm node list 'n\[1-': unclosed/);
  assert.throws(() => expandNodelist('n[3-1]'), /descending range '3-1'/);
  assert.throws(() => expandNodelist('n[a-b]'), /bad range 'a-b'/);
  assert.throws(() => expandNodelist('n1,,n2'), /empty host name/);
});

test('shellQuote: /bin/sh gets back exactly the words, whatever they hold', () => {
  const hostile = ['plain', 'a b', "it's", '"dq"', '$(touch /nonexistent/x)', '`id`', '; rm -rf /nonexistent', '\\', '', '*', '~', 'a\nb', '$HOME', '!x', "'", "''", '-n', '\t'];
  // printf prints each argument NUL-terminated, so the round trip is byte-exact.
  const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${hostile.map(shellQuote).join(' ')}`]);
  assert.deepEqual(out.toString('utf8').split('\0').slice(0, -1), hostile);
});

test('remoteScript: env names are checked, values and argv quoted, cwd checked remotely', () => {
  const s = remoteScript('h', ['node', 'a b.js'], { TPRUN_RANK: '1', X: "q'uote" }, '/tmp/x y');
  assert.match(s, /^export TPRUN_RANK=1\nexport X='q'\\''uote'\ncd -- '\/tmp\/x y' /);
  assert.match(s, /\nset -- node 'a b\.js'\n__TPRUN_BOOTSTRAP_END__\n$/);
  assert.throws(() => remoteScript('h', ['x'], { 'BAD-NAME': '1' }), /spawnRemote\(h\): cannot forward variable 'BAD-NAME'/);
  assert.throws(() => remoteScript('h', [], {}), /empty command/);
});

test('configs/hostfile.example parses', () => {
  const file = new URL('../configs/hostfile.example', import.meta.url);
  assert.deepEqual(parseHostfile(readFileSync(file, 'utf8'), 'configs/hostfile.example'), [
    { host: 'node01', slots: 4 },
    { host: 'node02', slots: 4, maxSlots: 8 },
  ]);
});

test('TPRUN_SSH_ARGS splits like a shell (quotes, escapes) and goes before the defaults', () => {
  assert.deepEqual(shellWords(`-F '/tmp/my cfg'  -o "ProxyJump=a b" -i\\ x ''`), ['-F', '/tmp/my cfg', '-o', 'ProxyJump=a b', '-i x', '']);
  assert.deepEqual(shellWords('  '), []);
  assert.throws(() => shellWords(`-F 'x`), /TPRUN_SSH_ARGS: unterminated '/);
  const cmd = sshCommand('h', ['-p', '2222'], { TPRUN_SSH: '/opt/ssh', TPRUN_SSH_ARGS: '-o StrictHostKeyChecking=yes' });
  assert.equal(cmd[0], '/opt/ssh');
  assert.deepEqual(cmd.slice(1, 5), ['-o', 'StrictHostKeyChecking=yes', '-p', '2222']);
  assert.ok(cmd.includes('BatchMode=yes'));
  assert.deepEqual(cmd.slice(-2), ['--', 'h']);
});
