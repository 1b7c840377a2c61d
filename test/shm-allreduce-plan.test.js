// Where a world's allReduce areas start (src/rank/shm-allreduce.ts shmAllReducePlan): as this rank
// advertised for this world (ArInfo.early), and the advert is the world's own decision (handed to its
// ShmOut), not a process-wide one of the world started last. Two worlds started in one process could leave
// a rank that advertised the early set-up without it (its peers then wait in the start-up exchange for
// it), or the other way round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { areaBytes, shmAllReducePlan, worldStartsEarly } from '../dist/rank/shm-allreduce.js';
import { ShmOut } from '../dist/rank/shm-link.js';

test('a world\'s areas start as its own advert says, whatever another world decided since', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-plan-'));
  const saved = { ...process.env };
  t.after(() => {
    for (const k of ['TPRUN_SHM_MMAP', 'TPRUN_SHM_EARLY', 'TPRUN_TRANSPORT']) if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
    rmSync(dir, { recursive: true, force: true });
  });
  process.env.TPRUN_SHM_MMAP = '0'; // the pread plane: no koffi needed
  const step = 65536;
  const off = 4096;
  const fds = [0, 1].map((r) => {
    const fd = openSync(join(dir, `area-${r}`), 'w+');
    ftruncateSync(fd, off + areaBytes(step));
    return fd;
  });
  t.after(() => fds.forEach((fd) => closeSync(fd)));
  const deps = { wait: async () => {}, nudge: () => {}, oversubscribed: false };
  const can = [[true, true], [true, true]];
  const start = (early, decidedSince) => {
    // Another world of this process decided since this one advertised.
    process.env.TPRUN_SHM_EARLY = decidedSince ? '1' : '0';
    delete process.env.TPRUN_TRANSPORT;
    assert.equal(worldStartsEarly(2, false), decidedSince);
    const peers = [0, 1].map((rank) => ({ rank, shm: { ar: { off, step, early } } }));
    const s = shmAllReducePlan(0, peers, [undefined, fds[1]], fds[0], can)?.start(deps);
    assert.ok(s, 'the plan takes the areas');
    const made = s.planeMade;
    s.close?.();
    return made;
  };
  assert.equal(start(true, false), 'early', 'advertised early: set up early though the latest decision was not');
  assert.equal(start(false, true), undefined, 'advertised first call: not set up though the latest decision was early');
  assert.equal(start(true, true), 'early');
});

test('two worlds of one process each advertise their own decision, and only with an area', { skip: !ShmOut.available() && 'no /dev/shm' }, (t) => {
  const saved = process.env.TPRUN_SHM_AR_STEP;
  t.after(() => { if (saved === undefined) delete process.env.TPRUN_SHM_AR_STEP; else process.env.TPRUN_SHM_AR_STEP = saved; });
  process.env.TPRUN_SHM_AR_STEP = '65536';
  const made = [];
  t.after(() => made.forEach((o) => o.close()));
  const open = (early) => { const o = new ShmOut(randomBytes(6).toString('hex'), 0, 2, 2, early); made.push(o); return o; };
  const a = open(true);
  const b = open(false); // started after a, deciding otherwise
  assert.equal(a.info.ar?.early, true, 'the first world advertises its own early set-up');
  assert.equal(b.info.ar?.early, false);
  // '00' is 0 as the areas' step is parsed: no area, so nothing advertised (a raw !== '0' read it as areas).
  process.env.TPRUN_SHM_AR_STEP = '00';
  assert.equal(open(true).info.ar, undefined);
});
