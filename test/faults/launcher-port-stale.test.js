// Port locks left by launchers that died (SIGKILL, power loss) never block later jobs: a lock whose owner
// is gone is taken over, and so is an empty one (its writer died between create and write) once it is old.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { leasePort } from '../../dist/launcher/port.js';

function candidatePorts() {
  const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  const hi = ephemeralStart - 1;
  return [Math.max(1024, Math.min(20000, hi - 4096)), hi];
}

for (const kind of ['a dead owner', 'no owner (empty) for a while']) {
  test(`every candidate port locked by ${kind}: a lease still succeeds`, async () => {
    const base = mkdtempSync(join(tmpdir(), 'tprun-ports-'));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = base;
    try {
      const dir = join(base, `tprun-ports-${userInfo().uid}`);
      mkdirSync(dir, { mode: 0o700 });
      // A pid that surely belongs to no process any more: one of a child that has exited.
      const dead = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim();
      const old = new Date(Date.now() - 3600_000);
      const [lo, hi] = candidatePorts();
      for (let p = lo; p <= hi; p++) {
        const f = join(dir, String(p));
        writeFileSync(f, kind.startsWith('a dead') ? dead : '');
        utimesSync(f, old, old);
      }
      const lease = await leasePort();
      try {
        assert.ok(lease.port >= lo && lease.port <= hi);
        assert.equal(readFileSync(join(dir, String(lease.port)), 'utf8'), String(process.pid));
      } finally {
        lease.release();
      }
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
      rmSync(base, { recursive: true, force: true });
    }
  });
}
