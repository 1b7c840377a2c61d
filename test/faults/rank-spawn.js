// Starts real rank processes with the environment tprun's launcher gives a single-host job, and hands
// them back while they run (test/helpers/spawn-ranks.js only returns once they have exited), so a test
// can poke at a live job: send it garbage, look at its sockets, signal one rank.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/spawn-ranks.js';

export const APP = fileURLToPath(new URL('./rank-app.js', import.meta.url));

/** Job variables as the launcher sets them for `tprun -n n` on one host. */
export async function jobEnv(n, extra = {}) {
  return {
    TPRUN_WORLD_SIZE: String(n), TPRUN_LOCAL_WORLD_SIZE: String(n), TPRUN_NODE_RANK: '0', TPRUN_MASTER_ADDR: '127.0.0.1',
    TPRUN_MASTER_PORT: String(await freePort()), TPRUN_JOB_ID: randomBytes(8).toString('hex'), TPRUN_SECRET: randomBytes(32).toString('hex'),
    ...extra,
  };
}

/**
 * One rank: { rank, pid, proc, stdout, stderr, exited: Promise<{code, signal}>, lines(): parsed JSON lines }.
 * @typedef {object} RankProc
 * @property {number} rank
 * @property {number | undefined} pid
 * @property {import('node:child_process').ChildProcess} proc
 * @property {string} stdout
 * @property {string} stderr
 * @property {number | null} code
 * @property {NodeJS.Signals | null} signal
 * @property {Promise<RankProc>} exited
 * @property {() => any[]} lines
 */

/** @param {number} rank @param {Record<string, string>} env @param {string[]} args @returns {RankProc} */
export function startRank(rank, env, args, { killAfterMs = 60000 } = {}) {
  const proc = spawn(process.execPath, [APP, ...args], {
    env: { ...process.env, ...env, TPRUN_RANK: String(rank), TPRUN_LOCAL_RANK: String(rank) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const guard = setTimeout(() => proc.kill('SIGKILL'), killAfterMs); // a hang guard, not a timing expectation
  /** @type {RankProc} */
  const r = {
    rank, pid: proc.pid, proc, stdout: '', stderr: '', code: null, signal: null,
    exited: new Promise((res) => proc.on('exit', (code, signal) => {
      clearTimeout(guard);
      r.code = code;
      r.signal = signal;
      res(r);
    })),
    lines: () => r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)),
  };
  proc.stdout.setEncoding('utf8').on('data', (d) => (r.stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (r.stderr += d));
  return r;
}

export function startRanks(n, env, args, opts) {
  return Array.from({ length: n }, (_, r) => startRank(r, env, args, opts));
}

/** Polls until pred() holds; throws after `ms` (a hang guard). */
export async function until(pred, ms = 30000, what = 'condition') {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
