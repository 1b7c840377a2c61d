// Starts N rank processes with the environment tprun's launcher gives them (CONTRACTS.md), for tests
// that need a world without the launcher in between (to see what the ranks themselves do when a peer
// dies, or to add an impostor). Resolves with every process's exit and output.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { leasePort } from '../../dist/launcher/port.js';

// A port from below the kernel's ephemeral range, leased as tprun's launcher leases rank 0's (its lock file held
// until this process exits): a port probed with listen(0) and closed again was, under load, sometimes taken
// before rank 0 bound it (another process's outgoing connection, which draws from the ephemeral range), and
// rank 0 failed 'cannot listen on tcp://127.0.0.1:PORT: Address already in use'.
/** @type {import('../../dist/launcher/port.js').PortLease[]} */
const leases = [];
process.once('exit', () => { for (const l of leases) l.release(); });

/** @returns {Promise<number>} */
export async function freePort() {
  const lease = await leasePort();
  leases.push(lease);
  return lease.port;
}

/**
 * @typedef {object} RankRun
 * @property {number} rank
 * @property {string} stdout
 * @property {string} stderr
 * @property {number | null} code
 * @property {NodeJS.Signals | null} signal
 * @property {number | undefined} pid
 * @property {import('node:child_process').ChildProcess} proc
 * @property {Promise<RankRun>} exited  resolves once the process has exited
 */

/**
 * `extra`: more processes with the same job variables, e.g. an impostor claiming a rank: [{ rank, env }];
 * they start before the ranks and come after them in the result.
 * `gate(i, procs)`: a promise to wait for before starting result entry i (procs[j]: entries started so far).
 * @param {number} n
 * @param {string[]} argv
 * @param {{ env?: NodeJS.ProcessEnv, perRankEnv?: (rank: number) => NodeJS.ProcessEnv, timeoutMs?: number,
 *   extra?: { rank: number, env: NodeJS.ProcessEnv }[], gate?: (i: number, procs: RankRun[]) => unknown }} [options]
 * @returns {Promise<RankRun[]>}
 */
export async function spawnRanks(n, argv, { env = {}, perRankEnv = () => ({}), timeoutMs = 50000, extra = [], gate } = {}) {
  const port = await freePort();
  const secret = randomBytes(32).toString('hex');
  const job = randomBytes(8).toString('hex');
  /** @type {{ rank: number, env: NodeJS.ProcessEnv }[]} */
  const list = [...Array.from({ length: n }, (_, r) => ({ rank: r, env: {} })), ...extra];
  /** @type {RankRun[]} */
  const procs = new Array(list.length);
  const timer = setTimeout(() => { for (const p of procs) p?.proc.kill('SIGKILL'); }, timeoutMs);
  const order = [...list.keys()].map((k) => (k + n) % list.length);
  try {
    for (const i of order) {
      const { rank: r, env: own } = list[i];
      await gate?.(i, procs);
      const e = {
        ...process.env, TPRUN_RANK: String(r), TPRUN_WORLD_SIZE: String(n), TPRUN_LOCAL_RANK: String(r), TPRUN_LOCAL_WORLD_SIZE: String(n),
        TPRUN_NODE_RANK: '0', TPRUN_MASTER_ADDR: '127.0.0.1', TPRUN_MASTER_PORT: String(port), TPRUN_JOB_ID: job, TPRUN_SECRET: secret,
        ...env, ...perRankEnv(r), ...own,
      };
      const p = spawn(process.execPath, argv, { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
      /** @type {RankRun} */
      const out = {
        rank: r, stdout: '', stderr: '', code: null, signal: null, pid: p.pid, proc: p,
        exited: new Promise((res) => p.on('exit', (code, signal) => { out.code = code; out.signal = signal; res(out); })),
      };
      p.stdout.on('data', (d) => (out.stdout += d));
      p.stderr.on('data', (d) => (out.stderr += d));
      procs[i] = out;
    }
    return await Promise.all(procs.map((p) => p.exited));
  } finally {
    clearTimeout(timer);
  }
}
