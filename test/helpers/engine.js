// Shared by the engine tests: the reference file and the numbers the issue asks for.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const MODEL = fileURLToPath(new URL('../../models/brown-llama-a', import.meta.url));
export const HELDOUT = fileURLToPath(new URL('../../data/brown-heldout.txt', import.meta.url));
export const REF = JSON.parse(readFileSync(new URL('../../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));

export function relL2(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function relDiff(a, b) {
  return Math.abs(a - b) / Math.abs(b);
}

import { CLI, newMark, markEnv, leftovers } from './procs.js';
import { spawn } from 'node:child_process';

/** Runs `node dist/cli.js ...args` to completion: { code, stdout, stderr, left } (left: processes left behind). */
export async function tprun(args, { env = {}, timeoutMs = 120000 } = {}) {
  const mark = newMark();
  const child = spawn(process.execPath, [CLI, ...args], { env: markEnv(mark, { TPRUN_QUIET: '1', ...env }), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise((res) => child.on('close', (c) => res(c)));
  clearTimeout(timer);
  return { code, stdout, stderr, left: await leftovers(mark) };
}

export function jsonLines(s) {
  return s.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}
