// Who am I and where do the ranks meet: read from whichever launcher started this process.
// Order of trust: tprun's own variables, then Open MPI, Slurm, PMI; nothing set => a world of one.
import { createHash, createHmac } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WorldIdentity } from './types.js';
import { expandNodelist } from './slurm-nodelist.js';

export type Env = Record<string, string | undefined>;

export class WorldConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorldConfigError';
  }
}

function int(env: Env, name: string, min = 0): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v.trim()) || Number(v) < min) throw new WorldConfigError(`${name}='${v}' is not an integer >= ${min}`);
  return Number(v);
}

export function detectIdentity(env: Env = process.env): WorldIdentity & { inWorld: boolean } {
  const pick = (source: string, rank?: number, size?: number, localRank?: number, localSize?: number, nodeRank?: number) => {
    if (rank === undefined || size === undefined) return undefined;
    if (size < 1 || rank >= size) throw new WorldConfigError(`${source}: rank ${rank} is not below world size ${size}`);
    // Without local information, assume one node: the common case for mpirun/srun on a workstation.
    return {
      rank, size, localRank: localRank ?? rank, localSize: localSize ?? size, nodeRank: nodeRank ?? 0, source, inWorld: true,
    };
  };
  const found =
    pick('tprun', int(env, 'TPRUN_RANK'), int(env, 'TPRUN_WORLD_SIZE', 1), int(env, 'TPRUN_LOCAL_RANK'),
      int(env, 'TPRUN_LOCAL_WORLD_SIZE', 1), int(env, 'TPRUN_NODE_RANK')) ??
    pick('openmpi', int(env, 'OMPI_COMM_WORLD_RANK'), int(env, 'OMPI_COMM_WORLD_SIZE', 1),
      int(env, 'OMPI_COMM_WORLD_LOCAL_RANK'), int(env, 'OMPI_COMM_WORLD_LOCAL_SIZE', 1), ompiNodeRank(env)) ??
    pick('slurm', int(env, 'SLURM_PROCID'), int(env, 'SLURM_NTASKS', 1) ?? int(env, 'SLURM_NPROCS', 1),
      int(env, 'SLURM_LOCALID'), slurmLocalSize(env), int(env, 'SLURM_NODEID')) ??
    pick('pmi', int(env, 'PMI_RANK'), int(env, 'PMI_SIZE', 1), int(env, 'MPI_LOCALRANKID'), int(env, 'MPI_LOCALNRANKS', 1));
  return found ?? { rank: 0, size: 1, localRank: 0, localSize: 1, nodeRank: 0, source: 'single', inWorld: false };
}

/** Open MPI's OMPI_COMM_WORLD_NODE_RANK is the rank *within* a node; the node index comes from the
 *  first-rank list when present (OMPI_FIRST_RANKS = the world rank of each node's first process). */
function ompiNodeRank(env: Env): number | undefined {
  const firsts = env.OMPI_FIRST_RANKS?.split(',').map(Number);
  const rank = int(env, 'OMPI_COMM_WORLD_RANK');
  if (!firsts || rank === undefined || firsts.some((n) => !Number.isInteger(n))) return undefined;
  let node = 0;
  for (let i = 0; i < firsts.length; i++) if (firsts[i] <= rank) node = i;
  return node;
}

function slurmLocalSize(env: Env): number | undefined {
  // SLURM_TASKS_PER_NODE looks like "2(x3),1"; our node's count is what we need.
  const nodeId = int(env, 'SLURM_NODEID');
  const spec = env.SLURM_TASKS_PER_NODE;
  if (nodeId === undefined || !spec) return undefined;
  const counts: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return undefined;
    for (let i = 0; i < Number(m[2] ?? 1); i++) counts.push(Number(m[1]));
  }
  return counts[nodeId];
}

/**
 * Whether a command that needs `n` ranks joins the world this process is already part of (started by
 * tprun, mpirun, srun or torchrun), rather than starting its ranks itself (alone, or in a one-task
 * allocation such as srun -n1 or mpirun -np 1, which cannot host n > 1 ranks).
 */
export function joinsWorld(n: number, id: ReturnType<typeof detectIdentity> = detectIdentity()): boolean {
  return id.inWorld && !(id.size === 1 && n > 1 && id.source !== 'tprun');
}

/** Where rank 0 listens, how peers reach it, and the job secret they must prove. */
export interface Rendezvous {
  /** What rank 0 binds (tcp://*:PORT or ipc://PATH). */
  bind: string;
  /** What the other ranks connect to. */
  connect: string;
  /** The host name/address of rank 0 as other ranks see it (for tcp data-plane defaults). */
  masterHost?: string;
  /** 32 bytes; HMAC key for the handshake. */
  secret: Buffer;
  jobId: string;
  /** How the secret was obtained, for error messages and docs. */
  secretSource: string;
  /** The Slurm job and step (`1234.1`, SLURM_JOB_ID.SLURM_STEP_ID) that the job key, and so the derived
   *  secret, came from; absent with TPRUN_SECRET. The rendezvous tells it to the other side, so that a world
   *  spanning srun steps is refused naming the steps rather than as a wrong secret. */
  slurmStep?: string;
}

const hash = (...parts: string[]) => createHash('sha256').update(parts.join('\0')).digest();

/**
 * Rendezvous and secret:
 * - MASTER_ADDR/MASTER_PORT (TPRUN_ or conventional) name a TCP rendezvous.
 * - Under mpirun on one node without them: an ipc:// socket inside Open MPI's per-job session directory
 *   (mode 0700, removed by mpirun at the end), so other users cannot even connect and two jobs never
 *   collide. The secret is derived from OMPI_MCA_orte_precondition_transports, a random value mpirun
 *   generates per job and passes only through the ranks' environment.
 * - Slurm without MASTER_ADDR: first host of SLURM_JOB_NODELIST, port 20000 + jobid % 20000.
 * - TPRUN_SECRET (64 hex) always wins; without it, outside tprun, a secret derived from the job id is
 *   used and a warning says so whenever the rendezvous is TCP (anyone who can guess the id could join).
 */
export function rendezvousFor(id: WorldIdentity, env: Env = process.env): Rendezvous {
  const addr = env.TPRUN_MASTER_ADDR ?? env.MASTER_ADDR;
  const portS = env.TPRUN_MASTER_PORT ?? env.MASTER_PORT;
  // The job key names the rendezvous socket and the shared-memory files and seeds a derived secret. A Slurm
  // job may run job steps (srun) side by side, all with the job's id and often the same MASTER_ADDR/PORT:
  // the step id keeps them apart (else a rank of one step proved the other's secret and could join it, and
  // on one node both bound the same ipc path). tprun's id, PMIx's namespace (srun --mpi=pmix names the step
  // in it) and Open MPI's job id are each already one per launch.
  const slurmJob = env.SLURM_JOB_ID ?? env.SLURM_JOBID;
  const slurmStep = env.SLURM_STEP_ID ?? env.SLURM_STEPID;
  const stepKey = slurmJob !== undefined && slurmStep !== undefined ? `${slurmJob}.${slurmStep}` : undefined;
  let jobId = env.TPRUN_JOB_ID ?? env.PMIX_NAMESPACE ?? env.OMPI_MCA_ess_base_jobid ?? stepKey ?? slurmJob;
  // Where the step keys a derived secret, the rendezvous names it (Rendezvous.slurmStep). Only the ways
  // below that leave jobId unset (`??=`) change it, and then there is no step key.
  const steps = env.TPRUN_SECRET === undefined && stepKey !== undefined && stepKey === jobId ? { slurmStep: stepKey } : {};
  let secret: Buffer | undefined;
  let secretSource = 'TPRUN_SECRET';
  if (env.TPRUN_SECRET !== undefined) {
    if (!/^[0-9a-fA-F]{64}$/.test(env.TPRUN_SECRET)) throw new WorldConfigError('TPRUN_SECRET must be 64 hex characters');
    secret = Buffer.from(env.TPRUN_SECRET, 'hex');
  }
  const derived = (what: string, ...parts: string[]) => {
    secretSource = what;
    return createHmac('sha256', 'tprun/derived-secret').update(parts.join('\0')).digest();
  };

  if (addr && portS) {
    const port = Number(portS);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new WorldConfigError(`MASTER_PORT='${portS}' is not a TCP port`);
    jobId ??= `${addr}:${port}`;
    if (!secret) {
      if (env.OMPI_MCA_orte_precondition_transports) secret = derived('Open MPI job key', env.OMPI_MCA_orte_precondition_transports, jobId);
      else {
        secret = derived('job id (not secret)', jobId);
        if (id.rank === 0) process.stderr.write(`tprun: warning: no TPRUN_SECRET; the rendezvous at ${addr}:${port} uses a secret derived from the job id\n`);
      }
    }
    return { bind: `tcp://${bindHost(addr)}:${port}`, connect: `tcp://${bracket(addr)}:${port}`, masterHost: addr, secret, jobId, secretSource, ...steps };
  }

  if (id.source === 'openmpi' && id.localSize === id.size) {
    const dir = env.OMPI_MCA_orte_jobfam_session_dir ?? privateDir(env);
    jobId ??= 'ompi';
    secret ??= derived('Open MPI job key', env.OMPI_MCA_orte_precondition_transports ?? '', jobId, dir);
    const path = join(dir, `tprun-${hash(jobId).toString('hex').slice(0, 12)}.sock`);
    return { bind: `ipc://${path}`, connect: `ipc://${path}`, secret, jobId, secretSource };
  }

  if (id.source === 'slurm' && env.SLURM_JOB_NODELIST) {
    const host = expandNodelist(env.SLURM_JOB_NODELIST)[0];
    const job = Number(slurmJob ?? 0);
    // Steps of one job may run side by side (srun ... &), each with the job's id: the step id gives each its port.
    const port = 20000 + ((job * 7 + Number(slurmStep ?? 0)) % 20000);
    jobId ??= String(job);
    if (!secret) {
      secret = derived('Slurm job id (not secret)', jobId, slurmStep ?? '');
      if (id.rank === 0) process.stderr.write('tprun: warning: no TPRUN_SECRET under Slurm; export one (openssl rand -hex 32) for a private job\n');
    }
    return { bind: `tcp://*:${port}`, connect: `tcp://${bracket(host)}:${port}`, masterHost: host, secret, jobId, secretSource, ...steps };
  }

  if (id.size > 1 && id.localSize === id.size && jobId) {
    // One node, no address: a private ipc socket keyed by the job id.
    secret ??= derived('job id (local socket, same user only)', jobId);
    const path = join(privateDir(env), `tprun-${hash(jobId).toString('hex').slice(0, 12)}.sock`);
    return { bind: `ipc://${path}`, connect: `ipc://${path}`, secret, jobId, secretSource, ...steps };
  }
  throw new WorldConfigError(
    `rank ${id.rank} of ${id.size} (${id.source}): no rendezvous; set MASTER_ADDR and MASTER_PORT (and TPRUN_SECRET) for every rank`,
  );
}

/** A directory only this user can enter, for ipc sockets. */
function privateDir(env: Env): string {
  const uid = process.getuid?.() ?? 0;
  const dir = join(env.TMPDIR ?? tmpdir(), `tprun-${uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (st.uid !== uid || (st.mode & 0o077) !== 0) throw new WorldConfigError(`${dir} is not private to uid ${uid}; remove it or set TMPDIR`);
  return dir;
}

/** Rank 0 binds every interface when the master address is its own name/IP (it may be an alias). */
function bindHost(addr: string): string {
  return addr.includes(':') ? '[::]' : '*';
}
function bracket(addr: string): string {
  return addr.includes(':') && !addr.startsWith('[') ? `[${addr}]` : addr;
}
