// The default command: `tprun [options] -- COMMAND [ARGS...]` runs COMMAND on N ranks.
//
// Startup time is part of the product (`tprun bench launch`): loading yargs costs ~100 ms on a small
// machine, so a plain launch (`tprun -n 4 -- cmd`) is parsed by yargs-parser, the parser yargs itself
// uses, with the same option table. Anything the fast path does not fully understand (help, unknown
// options, a command without `--`) falls back to the full yargs CLI, which stays the one definition of
// behaviour and error messages.
import type { Argv, CommandModule, Options } from 'yargs';
import type { LaunchOptions } from '../launcher/launch.js';

// mpirun's and torchrun's spellings are aliases, so their users' command lines work as typed: Open MPI's
// -np (= -n), --host/-H (= --hosts), --machinefile (= --hostfile) from its orterun/prterun option table,
// and torchrun's --nproc-per-node, --nnodes, --node-rank (with their underscore forms) from
// torch/distributed/run.py.
export const launchOptions = {
  n: { alias: 'np', type: 'number', describe: 'number of ranks (default: 1, or all slots of --hostfile/--hosts)' },
  gpus: { type: 'string', default: 'auto', describe: 'auto (one per GPU of nvidia-smi -L), none, or a list of GPU indices, UUIDs, PCI bus ids (0000:41:00.0) or Vulkan vendor:device ids (10005:0 = lavapipe); WebGPU ranks are bound through Mesa\'s device-select layer' },
  'tag-output': { type: 'boolean', default: false, describe: 'prefix every output line with [rank]' },
  timeout: { type: 'number', describe: 'end the job after SEC seconds (exit code 124)' },
  x: { type: 'string', describe: 'forward VAR to the ranks, or set VAR=VALUE (repeatable)' },
  grace: { type: 'number', default: 3, describe: 'seconds between SIGTERM and SIGKILL when stopping ranks' },
  quiet: { alias: 'q', type: 'boolean', default: false, describe: 'no progress output' },
  json: { type: 'boolean', default: false, describe: "launcher's own messages as JSON lines, no bars" },
  trace: { type: 'string', describe: 'write a Chrome/Perfetto trace of all ranks to FILE' },
  hostfile: { alias: 'machinefile', type: 'string', describe: 'Open MPI hostfile (host slots=N per line)' },
  hosts: { alias: ['host', 'H'], type: 'string', describe: 'hosts and slots, e.g. a:2,b:2 (repeatable)' },
  'nproc-per-node': { alias: 'nproc_per_node', type: 'number', describe: 'ranks per host (torchrun); replaces the slot counts' },
  nnodes: { type: 'number', describe: 'use the first N hosts of --hostfile/--hosts (torchrun)' },
  'node-rank': { alias: 'node_rank', type: 'number', describe: 'torchrun compatibility: only 0 (tprun starts every node from here)' },
  secure: { type: 'boolean', default: false, describe: 'encrypt the world with CurveZMQ' },
} satisfies Record<string, Options>;

type Parsed = Record<string, unknown> & { _?: unknown[]; '--'?: unknown[] };

function list(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

export function toLaunchOptions(a: Parsed, command: string[]): LaunchOptions {
  return {
    n: a.n === undefined ? undefined : Number(a.n),
    command,
    gpus: String(a.gpus ?? 'auto'),
    tagOutput: !!a['tag-output'],
    timeoutSec: a.timeout === undefined ? undefined : Number(a.timeout),
    forward: list(a.x),
    graceSec: a.grace === undefined ? undefined : Number(a.grace),
    quiet: !!a.quiet,
    json: !!a.json,
    trace: a.trace === undefined ? undefined : String(a.trace),
    hostfile: a.hostfile === undefined ? undefined : String(a.hostfile),
    hosts: a.hosts === undefined ? undefined : list(a.hosts).join(','),
    nprocPerNode: a['nproc-per-node'] === undefined ? undefined : Number(a['nproc-per-node']),
    nnodes: a.nnodes === undefined ? undefined : Number(a.nnodes),
    nodeRank: a['node-rank'] === undefined ? undefined : Number(a['node-rank']),
    secure: !!a.secure,
  };
}

/** Open MPI's single-dash long options, as mpirun users type them: rewritten to the `--` form yargs reads. */
const MPIRUN_SINGLE_DASH = new Set(['-np', '-host', '-hostfile', '-machinefile']);

/** `args` of a launch with mpirun's single-dash spellings (`-np 4`) made `--np 4`; the command untouched. */
export function mpirunSpellings(args: string[]): string[] {
  const opts = launchOptions as Record<string, Options>;
  const flags = new Set(['help', 'h', 'version']);
  for (const [k, v] of Object.entries(opts)) if (v.type === 'boolean') for (const name of [k, ...list(v.alias)]) flags.add(name);
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    // The command starts after `--`, or at the first word that is neither an option nor an option's value.
    if (a === '--' || !a.startsWith('-')) return [...out, ...args.slice(i)];
    const eq = a.indexOf('=');
    const name = eq < 0 ? a : a.slice(0, eq);
    out.push(MPIRUN_SINGLE_DASH.has(name) ? `-${a}` : a);
    if (eq < 0 && !flags.has(name.replace(/^-+/, '')) && !name.startsWith('--no-') && i + 1 < args.length) out.push(args[++i]);
  }
  return out;
}

/** Runs the job and returns the exit code; bad input throws an error with exitCode 2. */
export async function runLaunch(o: LaunchOptions): Promise<number> {
  const { launch } = await import('../launcher/launch.js');
  return launch(o);
}

/**
 * The fast path: returns the parsed launch when `args` is nothing but known launcher options followed
 * by `-- COMMAND...`, or undefined to let the full CLI handle it.
 */
export async function fastParse(args: string[]): Promise<LaunchOptions | undefined> {
  const sep = args.indexOf('--');
  if (sep < 0 || args.slice(0, sep).some((a) => a === '-h' || a === '--help' || a === '--version')) return undefined;
  const { default: parser } = await import('yargs-parser');
  const opts = launchOptions as Record<string, Options>;
  const byType = (t: string) => Object.keys(opts).filter((k) => opts[k].type === t);
  const alias: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(opts)) if (v.alias) alias[k] = list(v.alias);
  const a = parser(args.slice(0, sep), {
    alias,
    boolean: byType('boolean'),
    number: byType('number'),
    string: byType('string'),
    configuration: { 'strip-aliased': true, 'strip-dashed': false, 'camel-case-expansion': false },
  }) as Parsed;
  if ((a._ ?? []).length > 0) return undefined;
  const known = new Set(['_', ...Object.keys(opts), ...Object.values(alias).flat()]);
  if (Object.keys(a).some((k) => !known.has(k))) return undefined;
  for (const k of byType('number')) if (Array.isArray(a[k])) return undefined;
  return toLaunchOptions(a, args.slice(sep + 1));
}

const launchCommand: CommandModule<object, any> = {
  command: '$0 [command..]',
  describe: 'run COMMAND on N ranks: tprun [options] -- COMMAND [ARGS...]',
  builder: (y: Argv) =>
    y
      .options(launchOptions)
      .positional('command', { type: 'string', array: true, describe: 'the program each rank runs, after --' })
      .parserConfiguration({ 'populate--': true }),
  handler: async (a: Parsed) => {
    const command = [...list(a.command), ...list(a['--'])];
    const code = await runLaunch(toLaunchOptions(a, command));
    process.exitCode = code;
  },
};
export default launchCommand;
