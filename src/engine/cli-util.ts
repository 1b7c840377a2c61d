// How engine commands end: a one-line message on stderr and the error's exit code (2 for bad input,
// or the failing rank's code when a distributed run fails), never a stack trace for expected errors.

import type { Argv } from 'yargs';
import type { World } from '../rank/types.js';
import { detectIdentity } from '../rank/identity.js';

/**
 * Whether to put ANSI codes on `stream`: never with NO_COLOR (no-color.org: set and not empty), always
 * with FORCE_COLOR (not 0), and otherwise only on a terminal that is the user's: a rank under mpirun /
 * srun / PMI may have a pseudo-terminal of the launcher's as stdout, which forwards into whatever the
 * launcher's own stdout is (often a pipe or a log file), so that is not taken as a person watching.
 */
export function ansiOn(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR) return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '' && env.FORCE_COLOR !== '0') return true;
  const id = detectIdentity(env);
  if (id.inWorld && id.source !== 'tprun') return false;
  return stream.isTTY === true;
}

/**
 * A yargs check for every command: a number option given something that is not a number (`--tp two`)
 * is named with what was typed, instead of yargs' NaN reaching the command.
 */
export function notANumber(argv: Record<string, unknown>, args: string[] = process.argv.slice(2)): true {
  for (const [k, v] of Object.entries(argv)) {
    if (typeof v !== 'number' || !Number.isNaN(v)) continue;
    const flag = k.length === 1 ? `-${k}` : `--${k}`;
    const i = args.findIndex((x) => x === flag || x.startsWith(`${flag}=`));
    if (i < 0) continue; // the camelCase twin of a kebab-case option: reported under its own name
    const typed = args[i].includes('=') ? args[i].slice(args[i].indexOf('=') + 1) : args[i + 1] ?? '';
    throw new Error(`${flag} ${typed}: not a number`);
  }
  return true;
}

export async function exitOnError(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const err = e as Error & { exitCode?: number };
    const msg = String(err?.message ?? e).split('\n')[0];
    // A failed rank has already been reported by the launcher, with its own message.
    if (!(err as { reported?: boolean })?.reported) process.stderr.write(`tprun: ${msg}\n`);
    if (process.env.TPRUN_DEBUG && err?.stack) process.stderr.write(`${err.stack}\n`);
    process.exit(typeof err?.exitCode === 'number' && err.exitCode > 0 ? err.exitCode : 1);
  }
}

/** `--input-ids 0,1,2` → [0, 1, 2], with the option named in errors. */
export function parseIds(s: string, option: string): number[] {
  const ids = s.split(',').map((x) => x.trim()).filter((x) => x !== '').map(Number);
  if (!ids.length || ids.some((x) => !Number.isInteger(x) || x < 0)) {
    throw Object.assign(new Error(`${option} ${s}: expected comma-separated non-negative integers`), { exitCode: 2 });
  }
  return ids;
}

export interface RankRunArgs { quiet?: boolean; json?: boolean; trace?: string }

/** H1's runDistributed (start n ranks, or join the world we run in), loaded when a command runs. */
export async function runOnRanks(n: number, body: (world: World) => Promise<void>, a: RankRunArgs = {}): Promise<void> {
  const { runDistributed } = await import('../launcher/self-launch.js');
  await runDistributed(n, body, { quiet: a.quiet || a.json, json: false, trace: a.trace });
}

/** The launcher options every engine command takes (they apply to the ranks it starts). */
export function rankRunOptions<T>(y: Argv<T>): Argv<T & { quiet: boolean; trace?: string }> {
  return y
    .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress bars' })
    .option('trace', { type: 'string', describe: 'write a Chrome/Perfetto trace of every rank\'s phases to FILE' }) as never;
}
