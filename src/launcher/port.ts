// The rendezvous port (TPRUN_MASTER_PORT) that rank 0 will listen on.
//
// The launcher cannot hand a bound socket to rank 0 (ZeroMQ binds by address), so there is a window
// between choosing a free port and rank 0 binding it. Two things keep other binders out of that window:
// - ports come from below the kernel's ephemeral range (ip_local_port_range), where the kernel never
//   hands out ports on its own (bind to port 0, outgoing connections), so only explicit binders compete;
// - every tprun job on the machine takes an exclusive lock file per port (O_EXCL in a per-user temp
//   directory) that it holds for the whole job, so two tprun jobs never pick the same port, even when
//   they start in the same millisecond. A lock whose owner is dead is taken over; the launcher's
//   watchdog removes the lock of a launcher that was SIGKILLed (watchdog.ts).
// Each candidate is also test-bound on all interfaces, so ports that other software holds are skipped.
import { mkdirSync, openSync, closeSync, writeSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { processEnded } from '../util/proc.js';

export interface PortLease {
  port: number;
  /** The lock file (its content is the owner's pid), for the watchdog to remove if the launcher dies. */
  file?: string;
  release(): void;
}

function candidateRange(): [number, number] {
  let ephemeralStart = 32768;
  try {
    ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    // not Linux: keep the IANA-ish default
  }
  const hi = ephemeralStart - 1;
  const lo = Math.max(1024, Math.min(20000, hi - 4096));
  return [lo, hi];
}

function lockDir(): string {
  let uid = 'u';
  try {
    uid = String(userInfo().uid);
  } catch {
    // no passwd entry: share the default directory
  }
  const dir = join(tmpdir(), `tprun-ports-${uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Writing a pid takes microseconds: an empty lock this old was left by a writer that died. */
function emptyAndOld(file: string): boolean {
  try {
    const st = statSync(file);
    return st.size === 0 && Date.now() - st.mtimeMs > 10_000;
  } catch {
    return false;
  }
}

/** Creates the lock for `port`, or returns false when a live job holds it. */
function tryLock(file: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = NaN;
      try {
        owner = Number(readFileSync(file, 'utf8'));
      } catch {
        // removed meanwhile: try again
      }
      if (owner > 0 && !processEnded(owner)) return false;
      // An empty file is a lock being written right now, unless it is old: its writer died in between.
      if (!(owner > 0) && !emptyAndOld(file)) return false;
      try {
        unlinkSync(file);
      } catch {
        // someone else took it over first
      }
    }
  }
  return false;
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '0.0.0.0', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** A free port held for this job until `release()` (also released when the process exits). */
export async function leasePort(): Promise<PortLease> {
  const [lo, hi] = candidateRange();
  const dir = lockDir();
  for (let i = 0; i < 64; i++) {
    const port = randomInt(lo, hi + 1);
    const file = join(dir, String(port));
    if (!tryLock(file)) continue;
    const release = () => {
      process.off('exit', release);
      try {
        unlinkSync(file);
      } catch {
        // already gone
      }
    };
    if (await bindable(port)) {
      process.on('exit', release);
      return { port, file, release };
    }
    release();
  }
  throw new Error(`no free port found in ${lo}-${hi}`);
}
