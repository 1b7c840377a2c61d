// Rendezvous ports: leases are exclusive among tprun jobs on a machine and come from below the
// kernel's ephemeral range.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { leasePort } from '../dist/launcher/port.js';

const lockFile = (port) => join(tmpdir(), `tprun-ports-${userInfo().uid}`, String(port));

test('concurrent leases never share a port, are bindable, and release their locks', async () => {
  const leases = await Promise.all(Array.from({ length: 24 }, () => leasePort()));
  try {
    const ports = leases.map((l) => l.port);
    assert.equal(new Set(ports).size, ports.length, `duplicate port in ${ports}`);
    const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    for (const p of ports) {
      assert.ok(p >= 1024 && p < ephemeralStart, `port ${p} is not below the ephemeral range`);
      assert.equal(readFileSync(lockFile(p), 'utf8'), String(process.pid));
    }
    // A leased port is free for rank 0 to bind.
    await new Promise((resolve, reject) => {
      const srv = createServer().once('error', reject);
      srv.listen({ port: ports[0], host: '0.0.0.0' }, () => srv.close(resolve));
    });
  } finally {
    for (const l of leases) l.release();
  }
  for (const l of leases) assert.ok(!existsSync(lockFile(l.port)), `lock of ${l.port} left behind`);
});
