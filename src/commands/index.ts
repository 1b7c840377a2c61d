// Every `tprun <command>` module, loaded on demand: a rank re-executing `tprun generate` must not pay for
// the benchmark, conversion and quantization code it never runs. Each module default-exports a yargs
// CommandModule and owns its options.
import type { CommandModule } from 'yargs';
import { def, loadCommands, type CommandLoader } from './loader.js';

const loaders: Record<string, CommandLoader> = {
  bench: (args) => import('./bench.js').then((m) => m.benchCommand(args)),
  convert: () => import('./convert.js').then(def),
  'gen-checkpoint': () => import('./gen-checkpoint.js').then(def),
  build: () => import('./build.js').then(def),
  generate: () => import('./generate.js').then(def),
  perplexity: () => import('./perplexity.js').then(def),
};

/** The subcommands that the CLI arguments `args` need registered. */
export const commandsFor = (args: string[]): Promise<CommandModule<any, any>[]> => loadCommands(loaders, args[0], args);
