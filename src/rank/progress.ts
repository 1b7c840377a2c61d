// Waiting for messages: a rank busy-polls shared memory for a while (what makes small messages fast),
// then sleeps until a peer wakes it, a ZeroMQ delivery kicks it, or a timer fires. While it waits it also
// watches the peers' health: a dead or departed peer it waits on fails the wait, naming that peer.
import { CommError } from './inbox.js';
import type { Links } from './links.js';

/** How long after a peer's disconnect its last messages may still land (see waitFor). */
const DISCONNECT_GRACE_MS = 100;
/** How long a rank whose peer said goodbye waits before failing in turn (see waitFor). */
const SECONDARY_FAILURE_DELAY_MS = 250;

export class Progress {
  /** Peers that left: `at` 0 for a goodbye, else when the disconnect was seen. */
  readonly gone = new Map<number, { at: number; why: string }>();
  fatal?: Error;
  /** Whether `fatal` reached the script; close() reports one that arrived after the last collective. */
  fatalShown = false;
  closed = false;
  /** waitFor calls in progress: an idle world tells a script that ended from one waiting on its peers (./idle.ts). */
  waiting = 0;
  /** Everyone asleep in waitFor (several when collectives run concurrently). */
  private wakers = new Set<() => void>();
  /** waitFor calls that have published a sleep epoch (concurrent collectives: several). */
  private sleepers = 0;
  private epoch = 0;
  private current = '';

  constructor(private rank: number, private links: Links, private spinNs: bigint, private timeoutMs: number) {}

  kick(): void {
    if (!this.wakers.size) return;
    const ws = [...this.wakers];
    this.wakers.clear();
    for (const w of ws) w();
  }

  fail(e: Error): void {
    this.fatal ??= e;
    this.kick();
  }

  private pump(): void {
    try {
      this.links.pump();
    } catch (e) {
      // A malformed piece or a collective the peer described otherwise: the world cannot go on.
      this.fatal ??= e as Error;
      this.fatalShown = true;
      throw new CommError(`${this.current} failed on rank ${this.rank}: ${(e as Error).message}`);
    }
  }

  /** Until `missing()` names no rank; fails on a timeout, a fatal error, or a missing rank that left. */
  async waitFor(what: string, missing: () => number[], timeoutMs = this.timeoutMs): Promise<void> {
    if (this.closed) throw new CommError(`${what}: the world is closed`);
    if (this.fatal) {
      this.fatalShown = true;
      throw new CommError(`${what} failed on rank ${this.rank}: ${this.fatal.message}`);
    }
    this.current = what;
    this.waiting++;
    try {
      this.pump();
      let m = missing();
      if (!m.length) return;
      const viaShm = m.every((r) => this.links.shm[r]);
      if (viaShm && this.spinNs > 0n) {
        const end = process.hrtime.bigint() + this.spinNs;
        do {
          this.pump();
          m = missing();
          if (!m.length) return;
        } while (process.hrtime.bigint() < end);
      }
      const deadline = Date.now() + timeoutMs;
      const shmOut = this.links.shmOut;
      let asleep = false;
      try {
        for (;;) {
          const fatal = this.fatal as Error | undefined; // set by event handlers while we awaited
          if (fatal) {
            this.fatalShown = true;
            throw new CommError(`${what} failed on rank ${this.rank}: ${fatal.message}`);
          }
          let graceEnd = Infinity;
          for (const r of m) {
            const g = this.gone.get(r);
            if (!g) continue;
            // A disconnect may race the last message it sent; fail only once it has had time to land.
            if (g.at !== 0 && Date.now() - g.at < DISCONNECT_GRACE_MS) {
              graceEnd = Math.min(graceEnd, g.at + DISCONNECT_GRACE_MS);
              continue;
            }
            // This rank fails only because rank r went first. A peer that said goodbye (it closed, or is
            // failing on its own error) still lives: give its exit a head start, so that the launcher (ours
            // or mpirun) names it rather than its victims. A disconnect is seen once r's process is gone.
            if (g.at === 0) await new Promise((res) => setTimeout(res, SECONDARY_FAILURE_DELAY_MS));
            throw new CommError(`${what} failed on rank ${this.rank}: ${g.why}`);
          }
          const left = Math.min(deadline, graceEnd + 1) - Date.now();
          if (Date.now() >= deadline) {
            throw new CommError(`${what} timed out after ${timeoutMs} ms on rank ${this.rank}: no data from rank${m.length > 1 ? 's' : ''} ${m.join(', ')}`);
          }
          // Asleep: peers that move shared-memory data for us send a wake-up; ZeroMQ deliveries kick us
          // directly. The timer only bounds a wake-up lost to the (unfenced) flag/counter race.
          // A fresh epoch each time: a peer wakes us at most once per epoch, and we may sleep again
          // after a wake-up that brought only part of what we wait for.
          if (shmOut) {
            if (!asleep) this.sleepers++;
            asleep = true;
            shmOut.setSleeping(++this.epoch);
            this.pump();
            m = missing();
            if (!m.length) return;
          }
          await new Promise<void>((res) => {
            const t = setTimeout(done, Math.max(1, Math.min(left, this.links.shmList.length ? 20 : 200)));
            const wakers = this.wakers;
            wakers.add(done);
            function done() {
              clearTimeout(t);
              wakers.delete(done);
              res();
            }
          });
          // close() on this rank while we slept: its links (and their shared-memory files) are gone.
          if (this.closed) throw new CommError(`${what} on rank ${this.rank}: the world was closed while it waited`);
          this.pump();
          m = missing();
          if (!m.length) return;
        }
      } finally {
        if (asleep && --this.sleepers === 0 && !this.closed) shmOut!.setSleeping(0);
      }
    } finally {
      this.waiting--;
    }
  }
}
