// The yargs CLI of `tprun <command>` (src/cli.ts picks how its commands are loaded): typos, the parse,
// and ranks that run the parse their launching process made. It names no command module itself, so that
// a command's bundle (scripts/bundle.mjs: this module and that one command) holds no other command.
import type { CommandModule } from 'yargs';
import { notANumber } from '../engine/cli-util.js';
import launchCommand from './launch.js';
import { packageVersion } from '../util/package-version.js';

/** The command modules that the CLI arguments `args` need (commands/index.ts commandsFor, or a bundle's one). */
export type CommandsFor = (args: string[]) => Promise<CommandModule<any, any>[]>;

/** Edit distance (insert, delete, substitute, swap two neighbours), for near misses of a command name. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** Whether `word` names a program the default command could run (a path, or a name on $PATH). */
async function isProgram(word: string): Promise<boolean> {
  if (word.includes('/')) return true;
  const { accessSync, statSync, constants } = await import('node:fs');
  const { join } = await import('node:path');
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      const f = join(dir || '.', word);
      accessSync(f, constants.X_OK);
      if (statSync(f).isFile()) return true;
    } catch {
      // not here
    }
  }
  return false;
}

/**
 * `tprun conver`: a word that is no subcommand and no program, but close to a subcommand's name, is a typo
 * (as git and npm answer), not a program to run on one rank; `tprun prog` and `tprun -- prog` stay launches.
 */
async function checkTypo(args: string[], commands: CommandModule<any, any>[]): Promise<void> {
  const word = args[0];
  if (word === undefined || word.startsWith('-')) return;
  const names = commands.flatMap((c) => (Array.isArray(c.command) ? c.command : [c.command ?? ''])).map((c) => String(c).split(' ')[0]).filter((n) => n && n !== '$0');
  if (names.includes(word)) return;
  const near = names
    .map((n) => ({ n, d: n.startsWith(word) && word.length >= 3 ? 0 : distance(word, n) }))
    .filter(({ d }) => d <= (word.length > 4 ? 2 : 1))
    .sort((x, y) => x.d - y.d);
  if (!near.length || (await isProgram(word))) return;
  throw Object.assign(new Error(`unknown command '${word}': did you mean ${near[0].n}? (to run a program of that name: tprun -- ${word})`), { exitCode: 2 });
}

/**
 * yargs renders the whole help text right after it starts a command's handler (usage.cacheHelpMessage in
 * yargs/build/lib/command.js, handleValidationAndGetResult), in case the handler later asks for help.
 * None of ours does, and the rendering (cliui measuring every line with string-width) cost ~100 ms of CPU
 * in every `tprun convert/build/generate` process, ranks included. `--help` renders the text on demand.
 */
function skipHelpCache(cli: unknown): void {
  const usage = (cli as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } })
    .getInternalMethods?.().getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => undefined;
}

/**
 * A command that starts its own ranks (runDistributed) re-executes its command line in each of them. The
 * arguments yargs parsed and checked here travel to those ranks in this variable, with the command line
 * they belong to, so a rank runs the handler without loading yargs again (~100 ms of CPU per rank on a
 * small machine: yargs' modules, cliui, Intl.Segmenter in string-width).
 */
const PARSED_ENV = 'TPRUN_CLI_PARSED';
const MAX_PARSED_BYTES = 32 * 1024;

const commandName = (c: CommandModule<any, any>): string => String((Array.isArray(c.command) ? c.command[0] : c.command) ?? '').split(' ')[0];

function recordingParse(c: CommandModule<any, any>, args: string[]): CommandModule<any, any> {
  const handler = c.handler;
  if (!handler) return c;
  return {
    ...c,
    handler: (argv) => {
      const rec = JSON.stringify({ args, name: commandName(c), argv });
      // Linux refuses to start a program with any one environment string over 128 KiB (MAX_ARG_STRLEN,
      // E2BIG), and yargs repeats values under their aliases: a long --prompt leaves the ranks to parse.
      if (rec.length <= MAX_PARSED_BYTES) process.env[PARSED_ENV] = rec;
      else delete process.env[PARSED_ENV];
      return handler(argv);
    },
  };
}

/** Runs the command as the process that started this rank parsed it; false when this is no such rank. */
export async function runParsedByParent(args: string[], commandsFor: CommandsFor): Promise<boolean> {
  const raw = process.env[PARSED_ENV];
  if (raw === undefined) return false;
  // Meant for this process alone: programs it runs parse their own command lines.
  delete process.env[PARSED_ENV];
  if (process.env.TPRUN_RANK === undefined) return false;
  let rec: { args?: unknown; name?: unknown; argv?: unknown };
  try {
    rec = JSON.parse(raw);
  } catch {
    return false;
  }
  const same = Array.isArray(rec.args) && rec.args.length === args.length && rec.args.every((x, i) => x === args[i]);
  if (!same || typeof rec.argv !== 'object' || rec.argv === null) return false;
  const c = (await commandsFor(args)).find((m) => commandName(m) === rec.name);
  if (!c?.handler) return false;
  await c.handler(rec.argv as never);
  return true;
}

export async function fullCli(args: string[], commandsFor: CommandsFor): Promise<void> {
  const [{ default: yargs }, commands] = await Promise.all([import('yargs'), commandsFor(args)]);
  await checkTypo(args, commands);
  const cli = yargs(args)
    .scriptName('tprun')
    // This package's, where yargs would report that of whatever package.json is nearest the working directory.
    .version(await packageVersion())
    .usage('$0 [options] -- COMMAND [ARGS...]\n$0 <command> [options]')
    .strict()
    .showHelpOnFail(false)
    .fail((msg, err) => {
      // yargs passes a message for usage and .check() failures (bad input, exit 2) and none when a handler
      // threw (that error keeps its own exit code). Its messages may span lines: keep them on one.
      if (err && msg == null) throw err;
      // Thrown, not reported here: yargs would otherwise go on to run the handler.
      throw Object.assign(new Error(String(msg ?? err?.message).replace(/\s*\n\s*/g, ' ')), { exitCode: 2 });
    });
  skipHelpCache(cli);
  cli.check((a) => notANumber(a, args), true);
  for (const c of commands) cli.command(recordingParse(c, args));
  cli.command(launchCommand);
  await cli.help().alias('h', 'help').parseAsync();
}
