// Process accounting for multi-process tests: every process a test starts carries a unique marker in
// its environment (inherited by whatever it forks), so "nothing left behind" is checked exactly, without
// confusing our processes with those of other tests or other users of the machine.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const MARK_VAR = 'TPRUN_TEST_MARK';

/** A fresh marker; put `{ [MARK_VAR]: mark }` into the environment of what you start. */
export function newMark() {
  return randomBytes(8).toString('hex');
}

export function markEnv(mark, extra = {}) {
  return { ...process.env, [MARK_VAR]: mark, ...extra };
}

/** Live (non-zombie) processes whose environment carries `mark`: [{ pid, cmd }]. */
export function procsWithMark(mark) {
  const needle = `${MARK_VAR}=${mark}`;
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
      const env = readFileSync(`/proc/${d}/environ`, 'latin1').split('\0');
      if (env.includes(needle)) out.push({ pid: Number(d), cmd: readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0').join(' ').trim() });
    } catch {
      // exited meanwhile, or not ours to read
    }
  }
  return out;
}

/**
 * Waits (up to `ms`, a generous bound, not a performance expectation) until no process carries `mark`;
 * returns what is left (empty on success).
 */
export async function leftovers(mark, ms = 5000) {
  const end = Date.now() + ms;
  let left = procsWithMark(mark);
  while (left.length && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    left = procsWithMark(mark);
  }
  return left;
}

/** Waits until `pred()` is true (polling), failing after `ms`. */
export async function waitFor(pred, ms = 20000, what = 'condition') {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * @typedef {{ mark?: string, env?: Record<string, string | undefined>, cwd?: string }} TprunOptions
 * @typedef {{ code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }} TprunExit
 */

/**
 * Starts `node dist/cli.js ...args` with the marker; returns { child, done } where done resolves to
 * { code, signal, stdout, stderr } when the launcher exits.
 * @param {string[]} args
 * @param {TprunOptions} [options]
 */
export function startTprun(args, { mark, env = {}, cwd } = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: markEnv(mark ?? newMark(), env),
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  /** @type {Promise<TprunExit>} */
  const done = new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done, get stdout() { return stdout; }, get stderr() { return stderr; } };
}

/**
 * Runs tprun to completion and checks that nothing carrying its marker survives.
 * @param {string[]} args @param {TprunOptions} [opts]
 */
export async function runTprun(args, opts = {}) {
  const mark = opts.mark ?? newMark();
  const res = await startTprun(args, { ...opts, mark }).done;
  return { ...res, left: await leftovers(mark) };
}
