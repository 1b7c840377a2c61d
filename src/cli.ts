#!/usr/bin/env node
// `tprun [options] -- COMMAND` launches ranks; `tprun <command>` runs a subcommand (src/commands/).
//
// Imports are lazy on purpose: a launch must not pay for yargs, onnxruntime or the model code that the
// subcommands pull in (see src/commands/launch.ts and `tprun bench launch`).
import type { CommandModule } from 'yargs';
import type { CommandsFor } from './commands/cli-run.js';

/** Errors may carry the exit code they stand for (2: bad input; a failed rank's code; ...). */
interface CodedError extends Error {
  exitCode?: number;
  /** The launcher already printed the failure line. */
  reported?: boolean;
}

function exitWith(code: number): void {
  // Flush what is queued on stdout before leaving (it may be a pipe).
  process.stdout.write('', () => process.exit(code));
}

function fail(e: unknown, fallbackCode: number): void {
  const err = e as CodedError;
  const code = typeof err?.exitCode === 'number' ? err.exitCode : fallbackCode;
  if (!err?.reported) {
    const msg = String(err?.message ?? err).split('\n')[0];
    process.stderr.write(`tprun: ${msg}\n`);
    if (process.env.TPRUN_DEBUG && err?.stack) process.stderr.write(`${err.stack}\n`);
  }
  exitWith(code);
}

type LaunchModule = typeof import('./commands/launch.js');

/**
 * The launch command with the launcher behind it: from dist/launcher/launch.bundle.cjs where the build
 * made it (scripts/bundle.mjs; ~15 ES modules cost the launcher's start tens of ms of CPU before its first
 * rank could start), else the ES modules.
 */
async function launchModule(): Promise<LaunchModule> {
  const { bundlesOn, loadBundle } = await import('./util/bundle.js');
  const { fileURLToPath } = await import('node:url');
  const b = bundlesOn() ? loadBundle<LaunchModule>(fileURLToPath(new URL('./launcher/launch.bundle.cjs', import.meta.url))) : undefined;
  if (b) return b;
  // Start loading the launcher while the options are parsed.
  void import('./launcher/launch.js').catch(() => {});
  return import('./commands/launch.js');
}

/** What runs `tprun <command>`: the yargs CLI (commands/cli-run.ts) and the command modules it needs. */
type CommandCli = typeof import('./commands/cli-run.js') & { commandsFor: CommandsFor };
type CommandBundle = typeof import('./commands/cli-run.js') & { command: CommandModule<any, any> };

/** Commands with a bundle of their own (scripts/bundle.mjs: commands/NAME.bundle.cjs). */
const BUNDLED_COMMANDS = new Set(['build', 'convert']);

/**
 * The CLI for `args`: where the command has a bundle (its module, what it imports and yargs in one
 * CommonJS file) and the build made it, that bundle, picked by the command's name before any of yargs
 * is loaded; else the ES modules. As ES modules `tprun build` spent ≈ 0.25 s of CPU loading ~90 modules
 * of ours and ~60 of yargs and zod before its first weight write could start (docs/performance.md).
 */
async function commandCli(args: string[]): Promise<CommandCli> {
  const name = args[0];
  if (name !== undefined && BUNDLED_COMMANDS.has(name)) {
    const { bundlesOn, loadBundle } = await import('./util/bundle.js');
    const { fileURLToPath } = await import('node:url');
    const b = bundlesOn() ? loadBundle<CommandBundle>(fileURLToPath(new URL(`./commands/${name}.bundle.cjs`, import.meta.url))) : undefined;
    if (b) return { ...b, commandsFor: async () => [b.command] };
  }
  const [run, { commandsFor }] = await Promise.all([import('./commands/cli-run.js'), import('./commands/index.js')]);
  return { ...run, commandsFor };
}

const argv = process.argv.slice(2);
try {
  // A launch starts with an option (`tprun -n 4 -- cmd`); a subcommand starts with its name.
  const launchLike = argv.length > 0 && argv[0].startsWith('-') && argv[0] !== '--help' && argv[0] !== '-h' && argv[0] !== '--version';
  const launchMod = launchLike ? await launchModule() : undefined;
  const args = launchMod ? launchMod.mpirunSpellings(argv) : argv;
  const fast = launchMod ? { m: launchMod, o: await launchMod.fastParse(args) } : undefined;
  if (fast?.o) {
    exitWith(await fast.m.runLaunch(fast.o));
  } else {
    // `tprun --version` alone needs neither yargs nor any command module (the help listing does).
    if (args.length === 1 && args[0] === '--version') process.stdout.write(`${await (await import('./util/package-version.js')).packageVersion()}\n`);
    else {
      const cli = await commandCli(args);
      if (!(await cli.runParsedByParent(args, cli.commandsFor))) await cli.fullCli(args, cli.commandsFor);
    }
    if (process.exitCode !== undefined && process.exitCode !== 0) exitWith(Number(process.exitCode));
  }
} catch (e) {
  fail(e, 1);
}
