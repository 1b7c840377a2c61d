// Issue #11 item 1: where a rank listens. Loopback only when the launcher says outright that every rank
// runs here (tprun, Open MPI, Slurm, PMI variables); otherwise the interface peers reach us through.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { narrowRendezvous, ranksAllLocal } from '../../dist/rank/listen.js';

test('"every rank is local" needs the launcher to say so', () => {
  assert.equal(ranksAllLocal('tprun', { TPRUN_WORLD_SIZE: '4', TPRUN_LOCAL_WORLD_SIZE: '4' }), true);
  assert.equal(ranksAllLocal('tprun', { TPRUN_WORLD_SIZE: '4', TPRUN_LOCAL_WORLD_SIZE: '2' }), false);
  assert.equal(ranksAllLocal('tprun', { TPRUN_WORLD_SIZE: '4' }), false, 'a missing local size is no evidence');
  assert.equal(ranksAllLocal('openmpi', { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_LOCAL_SIZE: '2' }), true);
  assert.equal(ranksAllLocal('openmpi', { OMPI_COMM_WORLD_SIZE: '2' }), false);
  assert.equal(ranksAllLocal('slurm', { SLURM_STEP_NUM_NODES: '1' }), true);
  assert.equal(ranksAllLocal('slurm', { SLURM_STEP_NUM_NODES: '2', SLURM_JOB_NODELIST: 'gpu03' }), false);
  assert.equal(ranksAllLocal('slurm', { SLURM_JOB_NODELIST: 'gpu[03-04]' }), false);
  assert.equal(ranksAllLocal('slurm', { SLURM_JOB_NODELIST: 'gpu03' }), true);
  assert.equal(ranksAllLocal('pmi', { PMI_SIZE: '3', MPI_LOCALNRANKS: '3' }), true);
  assert.equal(ranksAllLocal('single', {}), false);
});

const rdv = (host) => ({ bind: 'tcp://*:29500', connect: `tcp://${host}:29500`, masterHost: host, secret: Buffer.alloc(32), jobId: 'j', secretSource: 't' });

test('a local job listens and connects on the loopback, whatever MASTER_ADDR names', async () => {
  for (const host of ['127.0.0.1', 'node7']) {
    const r = await narrowRendezvous(rdv(host), true);
    assert.equal(r.bind, 'tcp://127.0.0.1:29500');
    assert.equal(r.connect, 'tcp://127.0.0.1:29500');
  }
  const ipc = { ...rdv('x'), bind: 'ipc:///tmp/x.sock', connect: 'ipc:///tmp/x.sock' };
  assert.deepEqual(await narrowRendezvous(ipc, true), ipc);
});

test('a job across machines listens on the master address when it is ours, else everywhere', async () => {
  const own = Object.values(networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4');
  if (own) assert.equal((await narrowRendezvous(rdv(own.address), false)).bind, `tcp://${own.address}:29500`);
  assert.equal((await narrowRendezvous(rdv('192.0.2.77'), false)).bind, 'tcp://*:29500', 'not an address of this machine (NAT)');
  assert.equal((await narrowRendezvous(rdv('no-such-host.invalid'), false)).bind, 'tcp://*:29500');
  assert.equal((await narrowRendezvous(rdv('127.0.0.1'), false)).bind, 'tcp://*:29500', 'a loopback name in a multi-host job is not trusted');
});
