// Ranks must not outlive a launcher that was SIGKILLed (or crashed): nothing in the launcher runs then.
// Linux's PR_SET_PDEATHSIG is out of reach from Node, and a rank may be any program, so the ranks cannot
// be trusted to watch for it themselves. Instead one tiny /bin/sh per job watches the launcher: it reads
// the process-group ids of the ranks from a pipe whose only writer is the launcher. End of file without a
// final `done` line means the launcher is gone: the watchdog sends SIGTERM to every group, then SIGKILL
// after the grace period. It is started detached (its own process group), so signals aimed at the
// launcher's group do not reach it, and it costs one fork of sh per job, started while ranks spawn.
import { execa, type ResultPromise } from 'execa';

const SCRIPT = `
trap '' INT TERM HUP
g=
while IFS=' ' read -r c a; do
  case "$c" in
    add) g="$g $a" ;;
    done) exit 0 ;;
  esac
done
for p in $g; do kill -s TERM -- "-$p" 2>/dev/null; done
n=0
while [ "$n" -lt "$1" ]; do
  left=
  for p in $g; do kill -0 -- "-$p" 2>/dev/null && left=1; done
  [ -z "$left" ] && exit 0
  sleep 0.1; n=$((n+1))
done
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
`;

export class Watchdog {
  private child: ResultPromise;

  constructor(graceSec: number) {
    this.child = execa('/bin/sh', ['-c', SCRIPT, 'tprun-watchdog', String(Math.max(0, Math.round(graceSec * 10)))], {
      stdin: 'pipe',
      stdout: 'ignore',
      stderr: 'ignore',
      detached: true,
      cleanup: false,
      reject: false,
    });
    this.child.stdin!.on('error', () => {});
    // The watchdog must not keep the launcher's event loop alive, nor be waited for.
    this.child.unref();
    (this.child.stdin as unknown as { _handle?: { unref(): void } })._handle?.unref();
    this.child.catch(() => {});
  }

  /** Registers a rank's process group (its leader's pid). */
  watch(pgid: number): void {
    this.child.stdin!.write(`add ${pgid}\n`);
  }

  /** The job ended normally: the watchdog exits without touching anything. */
  disarm(): void {
    this.child.stdin!.end('done\n');
  }
}
