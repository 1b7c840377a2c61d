#!/usr/bin/env node
// `tprun [options] -- COMMAND` launches ranks; `tprun <command>` runs a subcommand (src/commands/).
//
// Imports are lazy on purpose: a launch must not pay for yargs, onnxruntime or the model code that the
// subcommands pull in (see src/commands/launch.ts and `tprun bench launch`).

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

async function fullCli(args: string[]): Promise<void> {
  const [{ default: yargs }, commands, { default: launchCommand }] = await Promise.all([
    import('yargs'),
    import('./commands/index.js').then((m) => m.commandsFor(args)),
    import('./commands/launch.js'),
  ]);
  // yargs would otherwise report the version of whatever package.json is nearest the working directory.
  const { version } = JSON.parse(await (await import('node:fs/promises')).readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  const cli = yargs(args)
    .scriptName('tprun')
    .version(version)
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
  const { notANumber } = await import('./engine/cli-util.js');
  cli.check((a) => notANumber(a, args), true);
  for (const c of commands) cli.command(c);
  cli.command(launchCommand);
  await cli.help().alias('h', 'help').parseAsync();
}

const args = process.argv.slice(2);
try {
  // A launch starts with an option (`tprun -n 4 -- cmd`); a subcommand starts with its name.
  const launchLike = args.length > 0 && args[0].startsWith('-') && args[0] !== '--help' && args[0] !== '-h' && args[0] !== '--version';
  // Start loading the launcher (execa is most of its cost) while the options are parsed.
  if (launchLike) void import('./launcher/launch.js').catch(() => {});
  const fast = launchLike ? await import('./commands/launch.js').then(async (m) => ({ m, o: await m.fastParse(args) })) : undefined;
  if (fast?.o) {
    exitWith(await fast.m.runLaunch(fast.o));
  } else {
    await fullCli(args);
    if (process.exitCode !== undefined && process.exitCode !== 0) exitWith(Number(process.exitCode));
  }
} catch (e) {
  fail(e, 1);
}
