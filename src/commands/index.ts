// Every `tprun <command>` module; src/cli.ts registers them in this order.
// Each module default-exports a yargs CommandModule and owns its options.
import type { CommandModule } from 'yargs';
import bench from './bench.js';
import convert from './convert.js';
import genCheckpoint from './gen-checkpoint.js';
import build from './build.js';
import generate from './generate.js';
import perplexity from './perplexity.js';

export const commands: CommandModule<any, any>[] = [
  bench,
  convert,
  genCheckpoint,
  build,
  generate,
  perplexity,
];
