// `tprun bench <what>`: every benchmark prints JSON lines and runs its reference tool side by side.
// Only the benchmark being run is imported (see loadCommands).
import type { CommandModule } from 'yargs';
import { def, loadCommands, type CommandLoader } from './loader.js';
const benches: Record<string, CommandLoader> = {
  comm: () => import('../bench/comm.js').then(def),
  generate: () => import('../bench/generate.js').then(def),
  launch: () => import('../bench/launch.js').then(def),
  multinode: () => import('../bench/multinode.js').then(def),
  quant: () => import('../bench/quant.js').then(def),
  convert: () => import('../bench/convert.js').then(def),
  build: () => import('../bench/build.js').then(def),
};

export async function benchCommand(args: string[]): Promise<CommandModule> {
  const picked = await loadCommands(benches, args[1], args);
  return {
    command: 'bench',
    describe: 'benchmarks (JSON lines), each next to its reference tool',
    builder: (y) => {
      for (const b of picked) y.command(b);
      return y.demandCommand(1);
    },
    handler: () => {},
  };
}
