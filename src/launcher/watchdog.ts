// Ranks must not outlive a launcher that was SIGKILLed (or crashed): nothing in the launcher runs then.
// Linux's PR_SET_PDEATHSIG is out of reach from Node, and a rank may be any program, so the ranks cannot
// be trusted to watch for it themselves. Instead one tiny /bin/sh per job watches the launcher: it reads
// the process-group ids of the ranks from a pipe whose only writer is the launcher. End of file without a
// final `done` line means the launcher is gone: the watchdog sends SIGTERM (and SIGCONT, so that stopped
// ranks act on it) to every group, SIGKILL after the grace period, and removes the launcher's port lock.
// It is started detached (its own process group), so signals aimed at the launcher's group do not reach
// it, and it costs one fork of sh per job, started before the first rank so no rank is ever unwatched.
//
// The script sticks to what every POSIX sh does alike: dash (Debian's /bin/sh) reads `kill -0 -- -PGID`
// as signal 0 and pid "-" ("Illegal number"), so it never saw a group alive and never sent SIGKILL;
// `kill -s NAME -- -PGID` is the spelling that dash, bash, busybox ash and mksh all read the same way.
import { spawn, type ChildProcess } from 'node:child_process';

const SCRIPT = `
trap '' INT TERM HUP PIPE
g=; lock=
while IFS= read -r l; do
  case "$l" in
    "add "*) g="$g \${l#add }" ;;
    "lock "*) lock=\${l#lock } ;;
    done) exit 0 ;;
  esac
done
for p in $g; do kill -s TERM -- "-$p" 2>/dev/null; kill -s CONT -- "-$p" 2>/dev/null; done
n=0
while [ "$n" -lt "$1" ]; do
  left=
  for p in $g; do kill -s 0 -- "-$p" 2>/dev/null && left=1; done
  [ -z "$left" ] && break
  sleep 0.1; n=$((n+1))
done
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
# The lock is the dead launcher's only while it still names it (another job may have taken it over).
o=; [ -n "$lock" ] && read -r o < "$lock" 2>/dev/null
[ -n "$lock" ] && [ "$o" = "$2" ] && rm -f -- "$lock"
exit 0
`;

export interface WatchdogOptions {
  /** The shell that runs the watchdog (default /bin/sh); tests try each shell a system may have. */
  shell?: string;
}

export class Watchdog {
  private child: ChildProcess;

  constructor(graceSec: number, opts: WatchdogOptions = {}) {
    const tenths = String(Math.max(0, Math.round(graceSec * 10)));
    this.child = spawn(opts.shell ?? '/bin/sh', ['-c', SCRIPT, 'tprun-watchdog', tenths, String(process.pid)], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    });
    // A watchdog that could not start (no fds or processes left) leaves the ranks to the launcher's own
    // cleanup; the ranks' spawns fail the same way and end the job.
    this.child.on('error', () => {});
    this.child.stdin?.on('error', () => {});
    // The watchdog must not keep the launcher's event loop alive, nor be waited for.
    this.child.unref();
    (this.child.stdin as unknown as { _handle?: { unref(): void } } | null)?._handle?.unref();
  }

  private send(line: string): void {
    const s = this.child.stdin;
    if (s && s.writable) s.write(`${line}\n`);
  }

  /** Registers a rank's process group (its leader's pid). */
  watch(pgid: number): void {
    this.send(`add ${pgid}`);
  }

  /** A file of the launcher's (its port lock) to remove once the ranks are gone, if the launcher dies. */
  removeOnDeath(file: string): void {
    if (!file.includes('\n')) this.send(`lock ${file}`);
  }

  /** The job ended normally: the watchdog exits without touching anything. */
  disarm(): void {
    const s = this.child.stdin;
    if (s && s.writable) s.end('done\n');
  }
}
