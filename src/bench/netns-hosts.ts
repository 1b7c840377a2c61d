// Test "hosts" on one machine: network namespaces joined by a bridge, each host running its own OpenSSH
// server with a host key and an authorized key made for the test in a temp dir.
//
//   head ns (launcher side):  br0 10.R.S.1/24 ── v0 ─┐  ── v1 ─┐ ...
//   host ns 0:                eth0 10.R.S.2/24 ──────┘         │
//   host ns 1:                eth0 10.R.S.3/24 ────────────────┘
//
// Nothing is configured in the root namespace: every address lives inside the namespaces made here, so
// traffic never leaves them. Namespace names carry the creating pid (`tprun<pid>-h`, `-0`, `-1`), so a
// later run removes leftovers of a crashed one. Needs root, iproute2, openssh-server and openssh-client.
// Used by the multinode tests (test/helpers/netns.js re-exports it) and by `tprun bench multinode`.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { shellQuote } from '../launcher/remote.js';

const SSHD = '/usr/sbin/sshd';

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why multi-host tests cannot run here, or undefined when they can. */
export function whyNoHosts(): string | undefined {
  if (process.platform !== 'linux') return 'multi-host tests need Linux network namespaces';
  if (process.getuid?.() !== 0) return 'multi-host tests need root (ip netns); CI runs them as root';
  if (!has('ip')) return 'multi-host tests need iproute2 (apt-get install iproute2)';
  if (!existsSync(SSHD)) return 'multi-host tests need openssh-server (apt-get install openssh-server)';
  if (!has('ssh') || !has('ssh-keygen')) return 'multi-host tests need openssh-client';
  try {
    const probe = `tprun${process.pid}-probe`;
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'ignore' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
  } catch {
    return 'cannot create network namespaces here (no CAP_SYS_ADMIN?)';
  }
  return undefined;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Pids of every process inside namespace `ns`. */
export function nsPids(ns: string): number[] {
  try {
    return ip('netns', 'pids', ns).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killAllIn(ns: string): void {
  for (const p of nsPids(ns)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {}
  }
}

function deleteNs(ns: string): void {
  killAllIn(ns);
  try {
    ip('netns', 'del', ns);
  } catch {}
}

/** Removes namespaces left by test processes that no longer exist. */
function reapStale() {
  let names: string[] = [];
  try {
    names = readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^tprun(\d+)-/.exec(n);
    if (m && !alive(Number(m[1]))) deleteNs(n);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TestHost {
  ns: string;
  addr: string;
  hostName: string;
  sshdPid: number;
  sshdErr: () => string;
}

export interface TestHosts {
  head: string;
  hosts: TestHost[];
  dir: string;
  subnet: string;
  sshConfig: string;
  sshArgs: string[];
  ssh: string;
  env: Record<string, string>;
  inNs: (ns: string, argv: string[]) => string[];
  pidsOf: (h: TestHost) => number[];
  teardown: () => void;
}

/**
 * Makes `count` hosts (opts.hide: per host, paths to hide under an empty tmpfs). Returns { head, hosts: [{ ns, addr, sshdPid }], dir, sshConfig, sshArgs, env,
 * inNs(ns, argv), pidsOf(host), teardown() }. `env` holds TPRUN_SSH/TPRUN_SSH_ARGS so that tprun's ssh
 * runs in the head namespace with the test keys; `sshArgs` is the same list for Open MPI's plm_rsh_args.
 */
export async function makeHosts(count = 2, opts: { hide?: string[][] } = {}): Promise<TestHosts> {
  reapStale();
  const tag = `tprun${process.pid}-${Math.random().toString(16).slice(2, 6)}`;
  const head = `${tag}-h`;
  const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250) + 1}`;
  const dir = mkdtempSync(join(tmpdir(), 'tprun-hosts-'));
  const made: string[] = [];
  const hosts: TestHost[] = [];
  const sshds: ChildProcess[] = [];
  let torn = false;
  const teardown = () => {
    if (torn) return;
    torn = true;
    for (const p of sshds) {
      try {
        p.kill('SIGKILL');
      } catch {}
    }
    for (const ns of made.reverse()) deleteNs(ns);
    rmSync(dir, { recursive: true, force: true });
    process.off('exit', teardown);
  };
  // A crash or an early exit of the test process still removes the namespaces.
  process.on('exit', teardown);
  try {
    ip('netns', 'add', head);
    made.push(head);
    ip('-n', head, 'link', 'set', 'lo', 'up');
    ip('-n', head, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', head, 'addr', 'add', `${subnet}.1/24`, 'dev', 'br0');
    ip('-n', head, 'link', 'set', 'br0', 'up');

    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tprun-test-user', '-f', join(dir, 'id')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tprun-test-host', '-f', join(dir, 'host')]);
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'id.pub')), { mode: 0o600 });
    const hostPub = readFileSync(join(dir, 'host.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
    // sshd refuses to start without its privilege separation directory.
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

    const etcHosts = join(dir, 'etc-hosts');
    const names = Array.from({ length: count }, (_, i) => `${subnet}.${i + 2} ${tag}-host${i}`);
    writeFileSync(etcHosts, ['127.0.0.1 localhost', '::1 localhost ip6-localhost ip6-loopback', ...names, ''].join('\n'));
    for (let i = 0; i < count; i++) {
      const ns = `${tag}-${i}`;
      const addr = `${subnet}.${i + 2}`;
      ip('netns', 'add', ns);
      made.push(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', head, 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip('-n', head, 'link', 'set', `v${i}`, 'master', 'br0', 'up');
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      const cfg = join(dir, `sshd_config.${i}`);
      writeFileSync(cfg, [
        `ListenAddress ${addr}`,
        'Port 22',
        `HostKey ${join(dir, 'host')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        `PidFile ${join(dir, `sshd.${i}.pid`)}`,
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PrintMotd no',
        'PrintLastLog no',
        'X11Forwarding no',
        'MaxStartups 200',
        'MaxSessions 200',
        'LogLevel ERROR',
        '',
      ].join('\n'));
      // Each host also gets its own host name (UTS namespace) and its own /dev/shm (mount namespace), so
      // ranks on different hosts cannot take a same-machine shortcut: their traffic crosses the bridge.
      // `hide` mounts empty tmpfs over paths so that host does not see them (no shared filesystem).
      const hostName = `${tag}-host${i}`;
      const hidden = (opts.hide?.[i] ?? []).map((p: string) => `mount -t tmpfs tmpfs ${JSON.stringify(p)} && `).join('');
      // Host names resolve on every host through its own /etc/hosts, as on a cluster with DNS.
      // The machine's own ~/.bashrc (bash reads it for ssh commands) stays out of the test hosts' output.
      const rc = existsSync('/root/.bashrc') ? 'mount --bind /dev/null /root/.bashrc && ' : '';
      const boot = `hostname ${hostName} && mount -t tmpfs tmpfs /dev/shm && mount --bind ${JSON.stringify(etcHosts)} /etc/hosts && ${rc}${hidden}exec ${SSHD} -D -e -f ${JSON.stringify(cfg)}`;
      const sshd = spawn('ip', ['netns', 'exec', ns, 'unshare', '--uts', '--mount', '--propagation', 'private', 'sh', '-c', boot], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      sshd.stderr!.on('data', (d) => (err += d));
      sshds.push(sshd);
      hosts.push({ ns, addr, hostName, sshdPid: sshd.pid!, sshdErr: () => err });
    }

    writeFileSync(join(dir, 'known_hosts'), hosts.map((h) => `${h.addr} ${hostPub}\n`).join(''));
    const sshConfig = join(dir, 'ssh_config');
    writeFileSync(sshConfig, [
      `Host ${subnet}.*`,
      '  User root',
      `  IdentityFile ${join(dir, 'id')}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${join(dir, 'known_hosts')}`,
      '  GlobalKnownHostsFile /dev/null',
      '  StrictHostKeyChecking yes',
      '  BatchMode yes',
      '  ConnectTimeout 10',
      '',
    ].join('\n'));
    // Strict: only the host key made here is accepted (tprun's default would be accept-new).
    const sshArgs = ['-F', sshConfig, '-o', 'StrictHostKeyChecking=yes'];
    // tprun's ssh (TPRUN_SSH) enters the head namespace itself, so a launcher anywhere reaches the hosts.
    const ssh = join(dir, 'ssh');
    writeFileSync(ssh, `#!/bin/sh\nexec ip netns exec ${head} ssh "$@"\n`, { mode: 0o755 });

    // Each sshd answers before the tests start.
    for (const h of hosts) {
      for (let t = 0; ; t++) {
        try {
          execFileSync('ip', ['netns', 'exec', head, 'ssh', ...sshArgs, h.addr, 'true'], { stdio: 'pipe', timeout: 10000 });
          break;
        } catch (e) {
          if (t > 50) throw new Error(`sshd in ${h.ns} (${h.addr}) does not answer: ${h.sshdErr()} ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
          await sleep(100);
        }
      }
    }

    return {
      head,
      hosts,
      dir,
      subnet,
      sshConfig,
      sshArgs,
      ssh,
      env: { TPRUN_SSH: ssh, TPRUN_SSH_ARGS: sshArgs.map(shellQuote).join(' ') },
      /** argv to run a command inside namespace ns (the launcher host is `head`). */
      inNs: (ns: string, argv: string[]) => ['ip', 'netns', 'exec', ns, ...argv],
      /** Processes in a host's namespace other than its sshd listener (ranks, their sshd sessions). */
      pidsOf: (h: TestHost) => nsPids(h.ns).filter((p) => p !== h.sshdPid),
      teardown,
    };
  } catch (e) {
    teardown();
    throw e;
  }
}
