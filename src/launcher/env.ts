// The environment of each rank (names fixed in notes/CONTRACTS.md).
import { deviceSelectEnv, hostGpus, isCudaId, vulkanTarget, type HostGpu } from './gpus.js';
import type { RankPlace } from './placement.js';

export interface JobIdentity {
  size: number;
  masterAddr: string;
  masterPort: number;
  jobId: string;
  secret: string;
  curve?: { publicKey: string; secretKey: string };
}

/** Variables that describe some other job's rank: a rank of this job must not see them. */
export const FOREIGN_IDENTITY = [
  'TPRUN_RANK', 'TPRUN_WORLD_SIZE', 'TPRUN_LOCAL_RANK', 'TPRUN_LOCAL_WORLD_SIZE', 'TPRUN_NODE_RANK',
  'TPRUN_MASTER_ADDR', 'TPRUN_MASTER_PORT', 'TPRUN_JOB_ID', 'TPRUN_SECRET',
  'TPRUN_CURVE_SERVER_PUBLIC', 'TPRUN_CURVE_SERVER_SECRET', 'TPRUN_EVENTS', 'TPRUN_TRACE',
  'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_SIZE',
  'OMPI_COMM_WORLD_NODE_RANK', 'PMI_RANK', 'PMI_SIZE', 'PMIX_RANK', 'SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_NODEID',
];

/**
 * `gpu`: the --gpus id of this rank. CUDA_VISIBLE_DEVICES gets CUDA's kinds of id, TPRUN_GPU every id;
 * a rank on this host also gets the device-select layer's environment for it (gpus.ts), so that any
 * Vulkan program run as a rank opens that device alone. An id this host cannot resolve is left to the
 * rank, which refuses it in one line (src/engine/device.ts).
 */
export function rankEnv(job: JobIdentity, p: RankPlace, gpu: string | undefined, events: string, gpus?: HostGpu[]): Record<string, string> {
  const env: Record<string, string> = {
    TPRUN_RANK: String(p.rank),
    TPRUN_WORLD_SIZE: String(job.size),
    TPRUN_LOCAL_RANK: String(p.localRank),
    TPRUN_LOCAL_WORLD_SIZE: String(p.localSize),
    TPRUN_NODE_RANK: String(p.nodeRank),
    TPRUN_MASTER_ADDR: job.masterAddr,
    TPRUN_MASTER_PORT: String(job.masterPort),
    TPRUN_JOB_ID: job.jobId,
    TPRUN_SECRET: job.secret,
    RANK: String(p.rank),
    WORLD_SIZE: String(job.size),
    LOCAL_RANK: String(p.localRank),
    LOCAL_WORLD_SIZE: String(p.localSize),
    MASTER_ADDR: job.masterAddr,
    MASTER_PORT: String(job.masterPort),
  };
  if (job.curve) {
    env.TPRUN_CURVE_SERVER_PUBLIC = job.curve.publicKey;
    env.TPRUN_CURVE_SERVER_SECRET = job.curve.secretKey;
  }
  if (gpu !== undefined) {
    env.TPRUN_GPU = gpu;
    if (isCudaId(gpu)) env.CUDA_VISIBLE_DEVICES = gpu;
    if (p.local) {
      const host = gpus ?? hostGpus();
      // Index 0 where the driver lists no GPU: the default adapter (a lavapipe or non-NVIDIA host).
      if (host.length || gpu !== '0') {
        try { Object.assign(env, deviceSelectEnv(vulkanTarget(gpu, host, `--gpus ${gpu}`))); } catch { /* the rank says why */ }
      }
    }
  }
  if (events) env.TPRUN_EVENTS = events;
  return env;
}

/**
 * `-x NAME` forwards NAME's current value, `-x NAME=VALUE` sets it (Open MPI's semantics). Locally every
 * variable is inherited anyway, so -x matters for remote ranks and for setting values.
 */
export function forwardedEnv(specs: string[], from: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of specs) {
    const eq = s.indexOf('=');
    const name = eq < 0 ? s : s.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw Object.assign(new Error(`-x ${s}: not a variable name`), { exitCode: 2 });
    if (eq >= 0) out[name] = s.slice(eq + 1);
    else if (from[name] !== undefined) out[name] = from[name]!;
  }
  return out;
}

/** A local rank's full environment: the launcher's own, minus foreign identities, plus the job's. */
export function localEnv(rankVars: Record<string, string>, forwarded: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  for (const k of FOREIGN_IDENTITY) delete env[k];
  return Object.assign(env, forwarded, rankVars);
}
