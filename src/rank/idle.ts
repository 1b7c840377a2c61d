// What lets a script that never calls world.close() end, as mpi4py (MPI_Finalize at exit) and
// torch.distributed scripts do. Node keeps a process alive while anything holds its event loop, and a
// world's ZeroMQ sockets always do (a pending read per socket, which zeromq.js cannot unref). So the
// world watches, off the loop's books, for the moment when nothing but itself is left: no timer,
// immediate, request or handle of the script's own (stdout/stderr do not count), and no operation of
// the world in flight. Seen twice in a row, the script has ended: the world closes itself, gracefully
// and bounded as close() is, and the process ends as it would have without a world.
// Blind spot: other native addons' own handles (another zeromq socket of the script) are as invisible
// to Node as ours; TPRUN_IMPLICIT_CLOSE=0 turns this off for scripts that wait on such things alone.

/** How often the world looks; two idle looks in a row end it (a script's end costs ~2 periods). */
const CHECK_MS = 100;

type Internal = { _getActiveHandles?: () => unknown[]; _getActiveRequests?: () => unknown[] };

/** True while anything of the script (not of a world) would keep Node's event loop alive. */
function scriptHasWork(): boolean {
  const p = process as unknown as Internal;
  if ((p._getActiveRequests?.() ?? []).length) return true;
  const handles = (p._getActiveHandles?.() ?? []).filter((h) => h !== process.stdout && h !== process.stderr);
  if (handles.length) return true;
  // Timers and immediates are listed here only (ref'd ones: the world's own watch timer is unref'd).
  return process.getActiveResourcesInfo().some((r) => r === 'Timeout' || r === 'Immediate');
}

export class IdleWatch {
  private timer?: NodeJS.Timeout;
  private idleLooks = 0;

  constructor(private busy: () => boolean) {}

  /** `atScriptEnd` runs once, when only this world is left on the event loop. */
  start(atScriptEnd: () => void, on: boolean): void {
    if (!on) return;
    if (typeof (process as unknown as Internal)._getActiveHandles !== 'function') return;
    this.timer = setInterval(() => {
      this.idleLooks = this.busy() || scriptHasWork() ? 0 : this.idleLooks + 1;
      if (this.idleLooks < 2) return;
      this.stop();
      atScriptEnd();
    }, CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
