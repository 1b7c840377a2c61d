// Starting a rank on another host over ssh.
//
// Nothing about the job travels on a command line: the ssh command is a fixed bootstrap, and the
// environment (the job secret included), the working directory and the argv arrive on the session's
// stdin as a small POSIX sh script built with `shellQuote`. So the remote login shell never parses user
// arguments, and neither `ps` on the launcher host nor on the remote host shows the secret.
//
// The session's stdin then stays open as a control channel. The command runs in the bootstrap's own
// session/process group and a watchdog reads stdin: a line `TERM`/`INT`/`KILL`/... is sent to that
// process group; end of file (the launcher or its ssh client vanished, the connection dropped)
// sends SIGTERM, then SIGKILL after a grace period. So a rank whose launcher disappeared exits by itself.
import { execa, type Options, type ResultPromise } from 'execa';
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { constants as osConstants } from 'node:os';

/** Quotes one word for a POSIX shell: `'...'` with each `'` written as `'\''`; safe for any byte string. */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const END = '__TPRUN_BOOTSTRAP_END__';

/** The script that the remote bootstrap evaluates: exports, cd, then `set -- argv`. */
export function remoteScript(host: string, argv: string[], env: Record<string, string>, cwd?: string, cwdRequired = false): string {
  if (argv.length === 0) throw new Error(`spawnRemote(${host}): empty command`);
  const lines: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (!ENV_NAME.test(k)) throw new Error(`spawnRemote(${host}): cannot forward variable '${k}' (not a shell name)`);
    if (v.includes('\0')) throw new Error(`spawnRemote(${host}): variable ${k} contains a NUL byte`);
    lines.push(`export ${k}=${shellQuote(v)}`);
  }
  if (cwd !== undefined) {
    // Like Open MPI: the launcher's directory when the host has it, else the login directory (no shared
    // filesystem is assumed), unless the caller insists on it.
    const q = shellQuote(cwd);
    lines.push(cwdRequired
      ? `cd -- ${q} 2>/dev/null || { printf '%s\\n' ${shellQuote(`tprun: ${host}: cannot change to directory ${cwd}`)} >&2; exit 2; }`
      : `cd -- ${q} 2>/dev/null || cd`);
  }
  for (const a of argv) if (a.includes('\0')) throw new Error(`spawnRemote(${host}): argument contains a NUL byte`);
  lines.push(`set -- ${argv.map(shellQuote).join(' ')}`);
  const script = lines.join('\n');
  // The end marker must be a line of its own that no quoted value can produce.
  if (script.split('\n').includes(END)) throw new Error(`spawnRemote(${host}): a value equals the bootstrap end marker`);
  return `${script}\n${END}\n`;
}

/**
 * The fixed program the remote login shell runs through `/bin/sh -c` (it contains no single quote).
 * - makes sure it leads its own session/process group (sshd already starts it so; other transports
 *   may not, then it re-executes itself under setsid), so `kill -- -$$` reaches the rank and its children;
 * - reads the script up to END and evaluates it (exports, cd, set -- argv);
 * - a watchdog subshell (same group, ignoring the signals it forwards) turns control lines into signals to
 *   the group and, at end of file, sends TERM and then KILL once the grace period is over;
 * - runs "$@" in the foreground with default signal dispositions (a background job would ignore SIGINT)
 *   while the shell itself only traps them, and exits with its status (128+N for signal N).
 */
function bootstrap(graceTenths: number): string {
  return [
    'g=; read -r _ _ _ _ g _ </proc/$$/stat 2>/dev/null',
    'if [ -n "$g" ] && [ "$g" != "$$" ] && [ -z "$TPRUN_BOOT_LEADER" ] && command -v setsid >/dev/null 2>&1; then',
    '  TPRUN_BOOT_LEADER=1 exec setsid /bin/sh -c "$TPRUN_BOOT"',
    'fi',
    'unset TPRUN_BOOT TPRUN_BOOT_LEADER',
    's=; ok=; nl="\n"',
    `while IFS= read -r l; do [ "$l" = ${END} ] && { ok=1; break; }; s="$s$l$nl"; done`,
    // A launcher that died while sending leaves a truncated script: run nothing.
    '[ -n "$ok" ] || exit 2',
    'eval "$s" || exit 2',
    'p=$$',
    'sig() { kill -s "$1" -- "-$p" 2>/dev/null || kill -s "$1" "$p" 2>/dev/null; }',
    'exec 3<&0',
    '( trap "" TERM INT HUP QUIT USR1 USR2 ALRM PIPE',
    '  while IFS= read -r c <&3; do case "$c" in [A-Z]*) sig "$c";; esac; done',
    `  sig TERM; n=0; while [ $n -lt ${graceTenths} ] && kill -0 "$p" 2>/dev/null; do sleep 0.1; n=$((n+1)); done; sig KILL`,
    ') </dev/null >/dev/null 2>&1 &',
    'exec 3<&-',
    // Handlers (not SIG_IGN) so that the command, after exec, starts with default dispositions.
    'trap : TERM INT HUP QUIT USR1 USR2 ALRM',
    '"$@" </dev/null',
    'exit $?',
  ].join('\n');
}

export interface RemoteOptions {
  cwd?: string;
  /** Fail (exit 2) when cwd does not exist on the host instead of starting in the login directory. */
  cwdRequired?: boolean;
  /** Extra ssh arguments before the host (e.g. `-F cfg`, `-p 2222`, `-i key`). */
  sshArgs?: string[];
  /** Seconds between SIGTERM and SIGKILL when the session ends without the command exiting (default 3). */
  graceSec?: number;
  /** Options merged over the execa defaults (stdout/stderr piped, no buffering, no rejection: read exitCode). */
  execa?: Options;
}

/**
 * Splits a command-line string into words the way a POSIX shell would, without expanding anything:
 * blanks separate words, '...' and "..." group, backslash escapes. For TPRUN_SSH_ARGS.
 */
export function shellWords(s: string, what = 'TPRUN_SSH_ARGS'): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new Error(`${what}: unterminated ' in '${s}'`);
      cur += s.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < s.length && s[j] !== '"'; j++) {
        if (s[j] === '\\' && j + 1 < s.length && '"\\$`'.includes(s[j + 1])) j++;
        cur += s[j];
      }
      if (j >= s.length) throw new Error(`${what}: unterminated " in '${s}'`);
      i = j;
      inWord = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

/** `TPRUN_SSH` overrides the ssh program; `TPRUN_SSH_ARGS` adds ssh arguments (shell-style quoting). */
export function sshCommand(host: string, extra: string[] = [], env: NodeJS.ProcessEnv = process.env): string[] {
  const ssh = env.TPRUN_SSH || 'ssh';
  const fromEnv = shellWords(env.TPRUN_SSH_ARGS ?? '');
  // ssh keeps the first value it sees for an option: the user's arguments go first so they win over
  // these defaults (e.g. `-o StrictHostKeyChecking=yes` with a known_hosts made for the job).
  return [
    ssh,
    ...fromEnv,
    ...extra,
    '-T', // no pty: output stays a plain byte stream and the exit status comes through
    '-x',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=accept-new',
    '-o', 'ServerAliveInterval=5',
    '-o', 'ServerAliveCountMax=3',
    '-o', 'ConnectTimeout=20',
    '-o', 'LogLevel=ERROR',
    '--',
    host,
  ];
}

const SIG_NAMES = new Map(Object.entries(osConstants.signals).map(([k, v]) => [v, k]));

function signalName(sig: NodeJS.Signals | number | undefined): string {
  if (sig === undefined) return 'SIGTERM';
  if (typeof sig === 'number') return SIG_NAMES.get(sig) ?? 'SIGTERM';
  return sig;
}

/**
 * Runs argv on host over ssh with env applied there. The returned execa child behaves like a local rank:
 * its exit code is the remote command's (128+N when a signal N ended it; 255 when ssh itself failed),
 * stdout/stderr stream the remote output, and `kill(sig)` delivers sig to the remote process group
 * through the session (SIGKILL also closes the session, and kills the local ssh a second later if it
 * is still there).
 */
export function spawnRemote(host: string, argv: string[], env: Record<string, string>, opts: RemoteOptions = {}): ResultPromise {
  const payload = remoteScript(host, argv, env, opts.cwd, opts.cwdRequired);
  const graceTenths = Math.max(0, Math.round((opts.graceSec ?? 3) * 10));
  const [ssh, ...args] = sshCommand(host, opts.sshArgs);
    // The login shell only sees this fixed text (POSIX shell syntax assumed, as Open MPI's ssh launcher does).
  const remote = `TPRUN_BOOT='${bootstrap(graceTenths)}'; export TPRUN_BOOT; exec /bin/sh -c "$TPRUN_BOOT"`;
  const child = execa(ssh, [...args, remote], {
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    stripFinalNewline: false,
    ...opts.execa,
  } as Options) as ResultPromise;
  const stdin = child.stdin!;
  // A dead session makes writes fail with EPIPE; the exit status reports what happened.
  stdin.on('error', () => {});
  stdin.write(payload);

  const localKill = child.kill.bind(child) as (...a: unknown[]) => boolean;
  const remoteKill = (sigOrErr?: unknown, err?: unknown): boolean => {
    const sig = typeof sigOrErr === 'string' || typeof sigOrErr === 'number' ? sigOrErr : undefined;
    const name = signalName(sig as NodeJS.Signals | number | undefined);
    if (child.exitCode !== null || child.signalCode !== null) return false;
    if (!stdin.writable || stdin.destroyed) return localKill(sigOrErr, err);
    if (name !== 'SIGKILL') {
      stdin.write(`${name.replace(/^SIG/, '')}\n`);
      return true;
    }
    // The KILL line must reach the remote side before the session drops (killing ssh at once could lose
    // it, leaving the remote group to the slower end-of-file path): close stdin, and only then, if ssh
    // has not ended with the remote command, kill it here.
    stdin.end('KILL\n');
    setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) localKill(sigOrErr, err);
    }, 1000).unref();
    return true;
  };
  (child as { kill: unknown }).kill = remoteKill;
  return child;
}

/**
 * The address of this machine that `host` reaches it by: what a local rank 0 must give remote ranks as
 * MASTER_ADDR (`localhost` would send them to themselves). The host name is resolved the way ssh resolves
 * it (`ssh -G`, so ssh_config aliases and HostName work), then the kernel picks the source address of a
 * route to it (a connected UDP socket; nothing is sent).
 */
export async function localAddressToward(host: string, sshArgs: string[] = []): Promise<string> {
  let target = host.replace(/^[^@]*@/, '');
  try {
    const [ssh, ...args] = sshCommand(host, sshArgs);
    const g = await execa(ssh, ['-G', ...args.slice(0, -2), target], { timeout: 10_000 });
    target = /^hostname (\S+)$/m.exec(g.stdout)?.[1] ?? target;
  } catch {
    // no usable ssh here: resolve the name as written
  }
  let found: { address: string; family: number };
  try {
    found = await lookup(target);
  } catch (e) {
    // A host name that does not resolve is bad input (like a bad hostfile line), named as the user wrote it.
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw Object.assign(new Error(`cannot resolve host ${host}${target !== host.replace(/^[^@]*@/, '') ? ` (${target})` : ''}: ${code}`), { exitCode: 2 });
  }
  const { address, family } = found;
  const sock = createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(9, address, () => resolve());
    });
    return sock.address().address;
  } catch (e) {
    throw new Error(`no route from this machine to ${host} (${address}): ${(e as Error).message}`);
  } finally {
    sock.close();
  }
}
