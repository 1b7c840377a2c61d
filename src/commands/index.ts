// Every `tprun <command>` module, loaded on demand: a rank re-executing `tprun generate` must not pay for
// the benchmark, conversion and quantization code it never runs. Each module default-exports a yargs
// CommandModule and owns its options.
import type { CommandModule } from 'yargs';

export type CommandLoader = (args: string[]) => Promise<CommandModule<any, any>>;
const def = (m: { default: CommandModule<any, any> }) => m.default;

const loaders: Record<string, CommandLoader> = {
  bench: (args) => import('./bench.js').then((m) => m.benchCommand(args)),
  convert: () => import('./convert.js').then(def),
  'gen-checkpoint': () => import('./gen-checkpoint.js').then(def),
  build: () => import('./build.js').then(def),
  generate: () => import('./generate.js').then(def),
  perplexity: () => import('./perplexity.js').then(def),
};

/** The module named `name` when there is one; all of them otherwise (help, or a typo yargs will report). */
export function loadCommands(from: Record<string, CommandLoader>, name: string | undefined, args: string[]): Promise<CommandModule<any, any>[]> {
  const picked = name !== undefined && Object.hasOwn(from, name) ? [name] : Object.keys(from);
  return Promise.all(picked.map((n) => from[n](args)));
}

/** The subcommands that the CLI arguments `args` need registered. */
export const commandsFor = (args: string[]): Promise<CommandModule<any, any>[]> => loadCommands(loaders, args[0], args);
