// Runs one job: N ranks of COMMAND, fail-fast, signals, output, progress and trace.
//
// Every local rank is the leader of its own process group (execa `detached`), so the launcher can signal
// a rank together with everything it forked, and the terminal's Ctrl-C reaches only the launcher, which
// then stops the ranks in order (signal, grace period, SIGKILL). A watchdog covers the launcher's own
// sudden death (see watchdog.ts). Remote ranks are ssh sessions from remote.ts that behave the same.
//
// Local ranks are started with node's own spawn rather than execa: when the launcher runs out of file
// descriptors (EMFILE), node returns a child without stdio and emits 'error' on it, and execa 9.6 then
// throws `subprocess.stdio is not iterable` and leaves that 'error' unhandled, crashing the launcher with
// the ranks already started orphaned. The launcher needs none of execa's buffering or rejection here.
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { constants as osConstants } from 'node:os';
import { assignGpus, detectGpus, parseGpus } from './gpus.js';
import { placeRanks, type RankPlace } from './placement.js';
import { leasePort, type PortLease } from './port.js';
import { forwardedEnv, localEnv, rankEnv, type JobIdentity } from './env.js';
import { directSink, OutputMux, RankStream } from './output.js';
import { ProgressView, renderMode } from './render.js';
import { Watchdog } from './watchdog.js';
import { reapGroups, stoppedMembers } from './groups.js';
import { fdHeadroom } from './fds.js';
import { nowUs, type RankEvent, type TraceEvent } from '../util/events.js';

export interface LaunchOptions {
  /** Number of ranks (default: 1, or every slot of --hostfile/--hosts). */
  n?: number;
  /** Program and arguments each rank runs. */
  command: string[];
  /** 'auto' (default), 'none' or a comma-separated device list. */
  gpus?: string;
  tagOutput?: boolean;
  /** Whole-job limit in seconds; the job then ends with exit code 124. */
  timeoutSec?: number;
  /** `-x NAME` / `-x NAME=VALUE`. */
  forward?: string[];
  /** Seconds between SIGTERM and SIGKILL when stopping ranks (default 3). */
  graceSec?: number;
  quiet?: boolean;
  json?: boolean;
  /** Chrome trace of all ranks (also taken from $TPRUN_TRACE). */
  trace?: string;
  hostfile?: string;
  hosts?: string;
  /** torchrun's --nproc-per-node, --nnodes, --node-rank (see placement.ts). */
  nprocPerNode?: number;
  nnodes?: number;
  nodeRank?: number;
  /** CurveZMQ keys for the world (TPRUN_CURVE_SERVER_*). */
  secure?: boolean;
  cwd?: string;
}

/** Bad launcher input (exit code 2). */
export class LaunchError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.exitCode = exitCode;
    this.name = 'LaunchError';
  }
}

/** A started rank, local (a process group we lead) or remote (an ssh session from remote.ts). */
interface RankChild {
  pid?: number;
  stdout: Readable | null;
  stderr: Readable | null;
  on(event: 'exit', cb: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  kill(sig: NodeJS.Signals): unknown;
}

/** How a rank's process and its pipes ended; `spawnError` is the errno code when it never started. */
interface RankEnd {
  code: number | null;
  signal: string | null;
  spawnError?: string;
}

/** Why a spawn failed, for the one line that says so. */
function spawnCause(code: string, local: boolean): string {
  switch (code) {
    case 'EMFILE':
    case 'ENFILE':
      return `${code}: out of file descriptors, each ${local ? 'local rank needs 2' : 'ssh rank needs 3'}; see ulimit -n`;
    case 'EAGAIN':
      return 'EAGAIN: out of processes; see ulimit -u';
    case 'ENOMEM':
      return 'ENOMEM: out of memory';
    default:
      return code;
  }
}

interface RankProc {
  place: RankPlace;
  child?: RankChild;
  pid?: number;
  exited: boolean;
  startUs: number;
  endUs?: number;
  /** The last bytes a remote rank's ssh wrote on stderr: its own connection errors end up there. */
  errTail?: string;
  trace: TraceEvent[];
}

/** Signals the launcher never sends: a rank that ends by one of them crashed. */
const CRASH_SIGNALS = new Set(['SIGSEGV', 'SIGABRT', 'SIGBUS', 'SIGILL', 'SIGFPE', 'SIGSYS', 'SIGTRAP']);
const DEFAULT_GRACE_SEC = 3;
/** What OpenSSH's client prints when it cannot connect or log in (ssh.c, sshconnect.c). */
const SSH_FAILURE = /^ssh: |Could not resolve hostname|Connection (refused|timed out|closed by)|No route to host|Network is unreachable|Permission denied \(|Host key verification failed|banner exchange|kex_exchange_identification/m;
/** Descriptors an ssh rank's spawn needs: three pipes (stdin, stdout, stderr), both ends, for a moment. */
const SSH_RANK_FDS = 8;
/** Signals that a stopped (SIGSTOP/SIGTSTP) process only acts on once it is continued. */
const NEEDS_CONT = new Set<NodeJS.Signals>(['SIGTERM', 'SIGINT', 'SIGHUP']);

function signalNumber(sig: string): number {
  return (osConstants.signals as Record<string, number>)[sig] ?? 0;
}

/** The trace is written at the end of the job: find out now, not after the job ran, that it can't be. */
function checkWritableDir(file: string): void {
  const dir = dirname(resolve(file));
  try {
    accessSync(dir, fsConstants.W_OK);
  } catch {
    throw new LaunchError(`--trace ${file}: directory ${dir} does not exist or is not writable`);
  }
}

export function validateLaunch(o: LaunchOptions): void {
  if (o.n !== undefined && (!Number.isInteger(o.n) || o.n < 1)) throw new LaunchError(`-n must be a positive integer (got ${o.n})`);
  if (o.command.length === 0 || o.command[0] === '') throw new LaunchError('no command given: tprun [options] -- COMMAND [ARGS...]');
  if (o.timeoutSec !== undefined && !(o.timeoutSec > 0)) throw new LaunchError(`--timeout must be a positive number of seconds (got ${o.timeoutSec})`);
  if (o.graceSec !== undefined && !(o.graceSec >= 0)) throw new LaunchError(`--grace must be a number of seconds >= 0 (got ${o.graceSec})`);
  for (const [name, v] of [['--nproc-per-node', o.nprocPerNode], ['--nnodes', o.nnodes]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new LaunchError(`${name} must be a positive integer (got ${v})`);
  }
  // torchrun runs one launcher per node, each told its --node-rank; tprun starts every node's ranks from
  // one launcher, so only the first node's invocation means anything.
  if (o.nodeRank !== undefined && o.nodeRank !== 0) {
    throw new LaunchError(`--node-rank ${o.nodeRank}: tprun starts the ranks of every node from one launcher; run it once (node rank 0) with --hostfile or --host`);
  }
}

/** Runs the job to its end and returns the launcher's exit code (it never calls process.exit). */
export async function launch(o: LaunchOptions): Promise<number> {
  validateLaunch(o);
  const t0 = nowUs();
  const grace = (o.graceSec ?? DEFAULT_GRACE_SEC) * 1000;
  const gpuSpec = parseGpus(o.gpus ?? 'auto');
  const forwarded = forwardedEnv(o.forward ?? []);
  const places = placeRanks(o.n, { hostfile: o.hostfile, hosts: o.hosts, perNode: o.nprocPerNode, nnodes: o.nnodes });
  const size = places.length;
  const traceFile = o.trace ?? (process.env.TPRUN_TRACE || undefined);
  if (traceFile !== undefined) checkWritableDir(traceFile);
  const mode = renderMode(o);

  const localPlaces = places.filter((p) => p.local);
  const masterLocal = places[0].local;
  // The port lease, GPU probe and (with --secure) key generation are independent: run them together.
  const [lease, gpus, curve] = await Promise.all([
    masterLocal ? leasePort() : Promise.resolve<PortLease>({ port: 20000 + Math.floor(Math.random() * 10000), release() {} }),
    gpuSpec === 'auto' && localPlaces.length ? detectGpus() : Promise.resolve<string[]>([]),
    o.secure ? import('zeromq').then((z) => z.curveKeyPair()) : Promise.resolve(undefined),
  ]);
  let localGpus: (string | undefined)[];
  try {
    localGpus = assignGpus(gpuSpec, gpus, localPlaces.length ? localPlaces[0].localSize : 0);
  } catch (e) {
    lease.release();
    throw e;
  }

  const firstRemote = places.find((p) => !p.local);
  // A local rank 0 must be named to remote ranks by the address they reach this machine at, not localhost.
  let masterAddr = places[0].host.replace(/^[^@]*@/, '');
  if (masterLocal) {
    try {
      masterAddr = firstRemote ? await (await import('./remote.js')).localAddressToward(firstRemote.host) : '127.0.0.1';
    } catch (e) {
      lease.release();
      throw e;
    }
  }
  const job: JobIdentity = {
    size,
    masterAddr,
    masterPort: lease.port,
    jobId: randomBytes(8).toString('hex'),
    secret: randomBytes(32).toString('hex'),
    ...(curve ? { curve: { publicKey: curve.publicKey, secretKey: curve.secretKey } } : {}),
  };
  const events = [mode !== 'none' ? 'progress' : '', traceFile ? 'trace' : ''].filter(Boolean).join(',');

  // Jobs that span hosts tag lines `[rank@host]`, so a remote rank's output says where it ran.
  const mux = new OutputMux(!!o.tagOutput, directSink, firstRemote ? (r: number) => `${r}@${places[r].host}` : String);
  const view = new ProgressView(mode, mux);
  const say = (msg: string, fields: Record<string, unknown> = {}) => {
    mux.closeLines();
    view.stop();
    process.stderr.write(o.json ? `${JSON.stringify({ tprun: msg, ...fields })}\n` : `tprun: ${msg}\n`);
  };

  const ranks: RankProc[] = places.map((place) => ({ place, exited: false, startUs: 0, trace: [] }));
  const launcherSpans: TraceEvent[] = [{ k: 't', name: 'node start + imports', ts: Math.round(performance.timeOrigin * 1000), dur: t0 - Math.round(performance.timeOrigin * 1000) }];
  const span = (name: string, ts: number, args?: Record<string, unknown>) => launcherSpans.push({ k: 't', name, ts, dur: nowUs() - ts, ...(args ? { args } : {}) });
  span('prepare', t0);

  let exitCode: number | undefined; // decided by the first failure / timeout / signal
  let stopping = false;
  let killTimer: NodeJS.Timeout | undefined;
  let stdoutBroken = false;

  const signalRank = (r: RankProc, sig: NodeJS.Signals) => {
    if (r.place.local) {
      if (r.pid === undefined) return;
      try {
        process.kill(-r.pid, sig);
        // A stopped rank would hold the signal pending until the grace period ends in SIGKILL.
        if (NEEDS_CONT.has(sig)) process.kill(-r.pid, 'SIGCONT');
      } catch {
        // the whole group is gone already
      }
    } else if (!r.exited) {
      r.child?.kill(sig);
    }
  };
  const killAll = () => {
    for (const r of ranks) signalRank(r, 'SIGKILL');
  };
  const stop = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    for (const r of ranks) if (!r.exited) signalRank(r, sig);
    killTimer = setTimeout(killAll, grace);
  };

  /** A still-running local rank with a stopped process in its group, other than `failed`. */
  const findStopped = (failed: RankProc | undefined): { rank: RankProc; pid: number } | undefined => {
    const live = ranks.filter((x) => x !== failed && x.place.local && !x.exited && x.pid !== undefined);
    if (!live.length) return undefined;
    const byGroup = stoppedMembers(live.map((x) => x.pid!));
    for (const x of live) {
      const pids = byGroup.get(x.pid!);
      if (pids?.length) return { rank: x, pid: pids.includes(x.pid!) ? x.pid! : pids[0] };
    }
    return undefined;
  };

  let exitedCount = 0;
  let markAllExited!: () => void;
  const allExited = new Promise<void>((resolve) => (markAllExited = resolve));

  const onRankEnd = (r: RankProc, code: number | null, signal: string | null, spawnError?: string) => {
    if (r.exited) return;
    r.exited = true;
    if (++exitedCount === ranks.length) markAllExited();
    r.endUs = nowUs();
    // What a rank leaves in its process group goes down with it.
    if (r.place.local) signalRank(r, 'SIGTERM');
    const failed = spawnError !== undefined || signal !== null || (code ?? 1) !== 0;
    // The first failure is named below; a rank that crashed while the job was already stopping (its peer,
    // seeing it gone, may have exited first and been named) is named too, so the cause is not hidden.
    if (stopping && signal !== null && CRASH_SIGNALS.has(signal)) say(`rank ${r.place.rank} (pid ${r.pid ?? '?'}) was killed by ${signal} as well`, { rank: r.place.rank, pid: r.pid, signal });
    if (!failed || stopping) return;
    const pid = r.pid ?? '?';
    // A rank that was stopped (SIGSTOP, SIGTSTP) fails nobody itself: its peers time out waiting for it,
    // and the first of them to give up would be named. Name the stopped one.
    const stopped = spawnError === undefined ? findStopped(r) : undefined;
    if (spawnError !== undefined) {
      exitCode = spawnError === 'ENOENT' ? 127 : 126;
      const started = ranks.filter((x) => x.pid !== undefined && !x.exited).length;
      const local = r.place.local;
      const what = local && (spawnError === 'ENOENT' || spawnError === 'EACCES')
        ? `cannot run '${o.command[0]}' (${spawnError})`
        : `${local ? `cannot start '${o.command[0]}'` : `cannot start ssh to ${r.place.host}`} (${spawnCause(spawnError, local)})${started ? `; stopping the ${started} rank(s) already started` : ''}`;
      say(`rank ${r.place.rank}: ${what}`, { rank: r.place.rank, code: exitCode, error: spawnError });
    } else if (stopped) {
      exitCode = signal !== null ? 128 + signalNumber(signal) : code ?? 1;
      const how = signal !== null ? `was killed by ${signal}` : `exited with code ${exitCode}`;
      say(`rank ${stopped.rank.place.rank} (pid ${stopped.pid}) is stopped (SIGSTOP/SIGTSTP) and holds up the job; rank ${r.place.rank} (pid ${pid}) ${how}`, {
        rank: stopped.rank.place.rank, pid: stopped.pid, stopped: true, noticedBy: { rank: r.place.rank, pid }, code: exitCode,
      });
    } else if (signal !== null) {
      exitCode = 128 + signalNumber(signal);
      say(`rank ${r.place.rank} (pid ${pid}) killed by ${signal}`, { rank: r.place.rank, pid, signal, code: exitCode });
    } else if (!r.place.local && code === 255) {
      // ssh's own code for "could not connect or log in"; its message (above, on the rank's stderr) may not
      // name the host (`Connection timed out during banner exchange`).
      exitCode = 255;
      const host = r.place.host;
      const msg = SSH_FAILURE.test(r.errTail ?? '')
        ? `rank ${r.place.rank}: cannot reach ${host} over ssh (exit 255)`
        : `rank ${r.place.rank} (pid ${pid}) on ${host} exited with code 255 (also ssh's code when it cannot reach or log in to ${host})`;
      say(msg, { rank: r.place.rank, pid, host, code: exitCode });
    } else {
      exitCode = code ?? 1;
      say(`rank ${r.place.rank} (pid ${pid}) exited with code ${exitCode}`, { rank: r.place.rank, pid, code: exitCode });
    }
    stop('SIGTERM');
  };

  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      // A second Ctrl-C: no more waiting.
      killAll();
      return;
    }
    exitCode ??= 128 + signalNumber(sig);
    say(`received ${sig}, stopping ${ranks.filter((r) => !r.exited).length} rank(s)`, { signal: sig });
    stop(sig === 'SIGHUP' ? 'SIGTERM' : sig);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  // A closed stdout (`tprun ... | head`) ends the job instead of crashing the launcher.
  const onStdoutError = () => {
    if (stdoutBroken) return;
    stdoutBroken = true;
    exitCode ??= 128 + signalNumber('SIGPIPE');
    stop('SIGTERM');
  };
  process.stdout.on('error', onStdoutError);

  const timeout =
    o.timeoutSec !== undefined
      ? setTimeout(() => {
          if (stopping) return;
          exitCode = 124;
          // A job that hangs because a rank was stopped: say which.
          const held = findStopped(undefined);
          const why = held ? `; rank ${held.rank.place.rank} (pid ${held.pid}) is stopped (SIGSTOP/SIGTSTP)` : '';
          say(`job timed out after ${o.timeoutSec}s, stopping ${ranks.filter((r) => !r.exited).length} rank(s)${why}`, {
            timeout: o.timeoutSec, ...(held ? { stopped: { rank: held.rank.place.rank, pid: held.pid } } : {}),
          });
          stop('SIGTERM');
        }, o.timeoutSec * 1000)
      : undefined;

  const { spawnRemote } = places.some((p) => !p.local) ? await import('./remote.js') : { spawnRemote: undefined };

  // Started before the first rank, so that a launcher SIGKILLed at any point leaves no rank unwatched.
  const watchdog = localPlaces.length ? new Watchdog(o.graceSec ?? DEFAULT_GRACE_SEC) : undefined;
  if (lease.file) watchdog?.removeOnDeath(lease.file);

  const done: Promise<void>[] = [];
  const spawnStart = nowUs();
  let spawnFailed = false;
  for (const r of ranks) {
    if (stopping || spawnFailed) {
      // Stopped (signal, timeout, a rank that could not start) before this rank was started: it never will be.
      onRankEnd(r, 0, null);
      continue;
    }
    const p = r.place;
    const vars = rankEnv(job, p, p.local ? localGpus[p.localRank] : gpuSpec === 'auto' || gpuSpec === 'none' ? undefined : gpuSpec[p.localRank % gpuSpec.length], events);
    r.startUs = nowUs();
    let child: RankChild;
    let ended: Promise<RankEnd>;
    if (p.local) {
      const c = spawn(o.command[0], o.command.slice(1), {
        env: localEnv(vars, forwarded),
        cwd: o.cwd,
        detached: true,
        // Only rank 0 reads the launcher's stdin, as with mpirun.
        stdio: [p.rank === 0 ? 'inherit' : 'ignore', 'pipe', 'pipe'],
      });
      child = c;
      ended = new Promise((resolve) => {
        // 'error' without a pid: it never started (ENOENT, EMFILE, ...). 'close': it and its pipes are done.
        c.on('error', (e: NodeJS.ErrnoException) => {
          if (c.pid === undefined) resolve({ code: null, signal: null, spawnError: e.code ?? 'spawn failed' });
        });
        c.on('close', (code, signal) => resolve({ code, signal }));
      });
      // No pid: this spawn failed (its 'error' comes on the next tick); start no further ranks.
      if (c.pid === undefined) spawnFailed = true;
    } else if ((fdHeadroom() ?? Infinity) < SSH_RANK_FDS) {
      // No room for the session's pipes: fail this rank as node would (see fds.ts for why not try).
      child = { stdout: null, stderr: null, on: () => undefined, kill: () => undefined };
      ended = Promise.resolve({ code: null, signal: null, spawnError: 'EMFILE' });
      spawnFailed = true;
    } else {
      const c = spawnRemote!(p.host, o.command, { ...forwarded, ...vars }, { cwd: o.cwd ?? process.cwd(), graceSec: o.graceSec ?? DEFAULT_GRACE_SEC });
      child = c as unknown as RankChild;
      ended = c.then((res) =>
        res.failed && res.exitCode === undefined && res.signal === undefined
          ? { code: null, signal: null, spawnError: res.code ?? 'spawn failed' }
          : { code: res.exitCode ?? null, signal: res.signal ?? null },
      );
    }
    r.child = child;
    r.pid = child.pid;
    if (p.local && r.pid !== undefined) watchdog!.watch(r.pid);
    const onEvent = (ev: RankEvent) => {
      if (ev.k === 'p') view.onProgress(p.rank, ev);
      else if (traceFile) r.trace.push(ev);
    };
    const out = new RankStream(mux, 'stdout', p.rank);
    const err = new RankStream(mux, 'stderr', p.rank, events ? onEvent : undefined);
    child.stdout?.on('data', (c: Buffer) => (stdoutBroken ? undefined : out.push(c)));
    child.stdout?.on('end', () => out.end());
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    if (!p.local) child.stderr?.on('data', (c: Buffer) => (r.errTail = ((r.errTail ?? '') + c.toString('latin1')).slice(-2048)));
    child.stderr?.on('end', () => err.end());
    // 'exit' comes as soon as the rank's process ends, even while something it forked holds the pipes.
    // Except ssh's 255: what ssh said about a failed connection is read only once its pipes are closed.
    child.on('exit', (code, signal) => (p.local || code !== 255 ? onRankEnd(r, code, signal) : undefined));
    done.push(ended.then((e) => onRankEnd(r, e.code, e.signal, e.spawnError)));
  }

  span('spawn ranks', spawnStart);
  const waitStart = nowUs();

  // All leaders are gone: give their leftovers the grace period, then SIGKILL whatever still holds a pipe.
  const exits = Promise.all(done);
  await Promise.race([allExited, exits]);
  const leftovers = setTimeout(killAll, grace);
  await exits;
  clearTimeout(leftovers);
  // Leftovers that ignore SIGTERM and hold no pipe of ours would escape the wait above.
  await reapGroups(ranks.filter((r) => r.place.local && r.pid !== undefined).map((r) => r.pid!), grace);
  if (killTimer) clearTimeout(killTimer);
  if (timeout) clearTimeout(timeout);
  for (const s of signals) process.off(s, onSignal);
  process.stdout.off('error', onStdoutError);
  watchdog?.disarm();
  lease.release();
  // Untagged output stays byte for byte (a last line without newline too); tagged output is line-based.
  if (o.tagOutput) mux.closeLines();
  view.stop();

  const code = exitCode ?? 0;
  span('run', waitStart);
  if (traceFile) {
    const procs = ranks.map((r) => ({
      pid: r.place.rank,
      label: `rank ${r.place.rank}${r.place.local ? '' : ` (${r.place.host})`}`,
      events: r.trace,
      outer: [{ k: 't' as const, name: 'process', ts: r.startUs, dur: (r.endUs ?? nowUs()) - r.startUs, args: { pid: r.pid } }],
    }));
    const { writeChromeTrace, adoptLocalTrace } = await import('../util/trace.js');
    procs.push({ pid: size, label: 'tprun launcher', events: [...launcherSpans, ...adoptLocalTrace()], outer: [] });
    writeChromeTrace(traceFile, procs, launcherSpans[0].ts);
  }
  if (o.json) {
    mux.closeLines();
    process.stderr.write(`${JSON.stringify({ tprun: 'exit', code, ranks: size, ms: Math.round((nowUs() - t0) / 1000) })}\n`);
  }
  return code;
}
