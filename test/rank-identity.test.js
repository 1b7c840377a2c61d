// Identity and rendezvous from each launcher's variables (pure functions of the environment).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectIdentity, initWorld } from 'tprun';
import { rendezvousFor } from '../dist/rank/identity.js';

test('no launcher variables: a world of one', () => {
  assert.deepEqual(detectIdentity({}), { rank: 0, size: 1, localRank: 0, localSize: 1, nodeRank: 0, source: 'single', inWorld: false });
});

test("tprun's variables win over the others", () => {
  const id = detectIdentity({ TPRUN_RANK: '3', TPRUN_WORLD_SIZE: '4', TPRUN_LOCAL_RANK: '1', TPRUN_LOCAL_WORLD_SIZE: '2', TPRUN_NODE_RANK: '1', OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '9' });
  assert.deepEqual(id, { rank: 3, size: 4, localRank: 1, localSize: 2, nodeRank: 1, source: 'tprun', inWorld: true });
});

test('Open MPI, Slurm and PMI', () => {
  assert.deepEqual(detectIdentity({ OMPI_COMM_WORLD_RANK: '5', OMPI_COMM_WORLD_SIZE: '6', OMPI_COMM_WORLD_LOCAL_RANK: '1', OMPI_COMM_WORLD_LOCAL_SIZE: '2', OMPI_FIRST_RANKS: '0,2,4' }),
    { rank: 5, size: 6, localRank: 1, localSize: 2, nodeRank: 2, source: 'openmpi', inWorld: true });
  assert.deepEqual(detectIdentity({ SLURM_PROCID: '4', SLURM_NTASKS: '5', SLURM_LOCALID: '0', SLURM_NODEID: '2', SLURM_TASKS_PER_NODE: '2(x2),1' }),
    { rank: 4, size: 5, localRank: 0, localSize: 1, nodeRank: 2, source: 'slurm', inWorld: true });
  assert.deepEqual(detectIdentity({ PMI_RANK: '1', PMI_SIZE: '2' }), { rank: 1, size: 2, localRank: 1, localSize: 2, nodeRank: 0, source: 'pmi', inWorld: true });
});

test('bad values are one-line errors naming the variable', () => {
  assert.throws(() => detectIdentity({ TPRUN_RANK: 'x', TPRUN_WORLD_SIZE: '2' }), /TPRUN_RANK='x' is not an integer/);
  assert.throws(() => detectIdentity({ PMI_RANK: '2', PMI_SIZE: '2' }), /pmi: rank 2 is not below world size 2/);
  const id = detectIdentity({ TPRUN_RANK: '0', TPRUN_WORLD_SIZE: '2' });
  assert.throws(() => rendezvousFor(id, { TPRUN_MASTER_ADDR: 'h', TPRUN_MASTER_PORT: '99999', TPRUN_SECRET: '0'.repeat(64) }), /MASTER_PORT='99999'/);
  assert.throws(() => rendezvousFor(id, { TPRUN_MASTER_ADDR: 'h', TPRUN_MASTER_PORT: '5000', TPRUN_SECRET: 'short' }), /TPRUN_SECRET must be 64 hex/);
});

test('rendezvous: TCP from MASTER_ADDR, ipc in the session dir under mpirun, first Slurm host', () => {
  const env = { TPRUN_RANK: '1', TPRUN_WORLD_SIZE: '2', TPRUN_MASTER_ADDR: 'node7', TPRUN_MASTER_PORT: '29500', TPRUN_SECRET: 'ab'.repeat(32), TPRUN_JOB_ID: 'j' };
  const r = rendezvousFor(detectIdentity(env), env);
  assert.equal(r.connect, 'tcp://node7:29500');
  assert.equal(r.secret.toString('hex'), 'ab'.repeat(32));
  const ompi = { OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_LOCAL_SIZE: '2', PMIX_NAMESPACE: '123', OMPI_MCA_orte_jobfam_session_dir: '/tmp/ompi.x/pid.1', OMPI_MCA_orte_precondition_transports: 'aa-bb' };
  const o = rendezvousFor(detectIdentity(ompi), ompi);
  assert.match(o.connect, /^ipc:\/\/\/tmp\/ompi\.x\/pid\.1\/tprun-[0-9a-f]{12}\.sock$/);
  const o2 = rendezvousFor(detectIdentity(ompi), { ...ompi, OMPI_MCA_orte_precondition_transports: 'cc-dd' });
  assert.notDeepEqual(o.secret, o2.secret, 'the per-job key changes the secret');
  const slurm = { SLURM_PROCID: '1', SLURM_NTASKS: '2', SLURM_NODEID: '1', SLURM_JOB_ID: '77', SLURM_JOB_NODELIST: 'gpu[03-04]', TPRUN_SECRET: 'cd'.repeat(32) };
  assert.match(rendezvousFor(detectIdentity(slurm), slurm).connect, /^tcp:\/\/gpu03:\d+$/);
});

test('a world of one needs no environment and copies locally', async () => {
  const w = await initWorld({ env: {} });
  assert.equal(w.size, 1);
  const b = new Float32Array([1, 2]);
  assert.equal(await w.allReduce(b), b);
  assert.deepEqual(Array.from(await w.allGather(b)), [1, 2]);
  await w.send(new Int32Array([7]), 0, 3);
  assert.deepEqual(Array.from(await w.recv(0, 3, new Int32Array(1))), [7]);
  assert.deepEqual(await w.broadcastObject({ a: 1 }, 0), { a: 1 });
  await assert.rejects(w.recv(0, 9), /nothing was sent/);
  await w.close();
});

test('CPU slices for local ranks', async () => {
  const { parseCpuList, sliceFor } = await import('../dist/rank/affinity.js');
  assert.deepEqual(parseCpuList('0-3,8,10-11\n'), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(sliceFor([0, 1], 1, 2), [1]);
  assert.deepEqual(sliceFor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 1, 2), [8, 9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual(sliceFor([0, 1, 2, 3, 4], 2, 3), [2]);
  assert.equal(sliceFor([0, 1], 2, 5), undefined, 'more ranks than CPUs: left unbound');
});

test('two concurrent Slurm job steps of one job derive different job keys (rendezvous socket, secret, shm names)', () => {
  // Same job, same MASTER_ADDR/MASTER_PORT: without the step id in the key, a rank of step 1 proved step
  // 0's secret and could join its world; on one node both steps' ipc rendezvous took the same path.
  const base = { SLURM_PROCID: '1', SLURM_NTASKS: '2', SLURM_LOCALID: '1', SLURM_NTASKS_PER_NODE: '2', SLURM_TASKS_PER_NODE: '2', SLURM_NODEID: '0', SLURM_JOB_ID: '77' };
  const tcp = { ...base, MASTER_ADDR: 'node7', MASTER_PORT: '29500' };
  const a = rendezvousFor(detectIdentity(tcp), { ...tcp, SLURM_STEP_ID: '0' });
  const b = rendezvousFor(detectIdentity(tcp), { ...tcp, SLURM_STEP_ID: '1' });
  assert.notEqual(a.jobId, b.jobId);
  assert.notDeepEqual(a.secret, b.secret);
  const one = { ...base };
  const ia = detectIdentity({ ...one, SLURM_STEP_ID: '0' });
  assert.equal(ia.localSize, ia.size, 'a one-node step');
  const pa = rendezvousFor(ia, { ...one, SLURM_STEP_ID: '0' });
  const pb = rendezvousFor(ia, { ...one, SLURM_STEP_ID: '1' });
  assert.match(pa.bind, /^ipc:/);
  assert.notEqual(pa.bind, pb.bind);
  // Slurm's older spelling, and a step id alongside a namespace that has its own (PMIx's names the step).
  assert.equal(rendezvousFor(detectIdentity(tcp), { ...tcp, SLURM_STEPID: '1' }).jobId, b.jobId);
  const pmix = { ...tcp, SLURM_STEP_ID: '1', PMIX_NAMESPACE: 'slurm.pmix.77.1' };
  assert.equal(rendezvousFor(detectIdentity(pmix), pmix).jobId, 'slurm.pmix.77.1');
});

test('the Slurm step the derived secret came from is named for the rendezvous; not with TPRUN_SECRET', () => {
  const id = detectIdentity({ TPRUN_RANK: '0', TPRUN_WORLD_SIZE: '2' });
  const env = { SLURM_JOB_ID: '1234', SLURM_STEP_ID: '1', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' };
  const write = process.stderr.write;
  process.stderr.write = () => true; // the warning about a derived secret
  try {
    assert.equal(rendezvousFor(id, env).slurmStep, '1234.1');
    assert.equal(rendezvousFor(id, { ...env, TPRUN_SECRET: 'ab'.repeat(32) }).slurmStep, undefined);
    assert.equal(rendezvousFor(id, { ...env, TPRUN_JOB_ID: 'j' }).slurmStep, undefined);
  } finally {
    process.stderr.write = write;
  }
});
