// `tprun bench <what>`: every benchmark prints JSON lines and runs its reference tool side by side.
import type { CommandModule } from 'yargs';
import generateBench from '../bench/generate.js';
import commBench from '../bench/comm.js';
import launchBench from '../bench/launch.js';
import quantBench from '../bench/quant.js';
import multinodeBench from '../bench/multinode.js';
import convertBench from '../bench/convert.js';

// Each benchmark module default-exports a CommandModule (`comm`, `launch`, `generate`, ...).
const benches: CommandModule<any, any>[] = [commBench, generateBench, launchBench, multinodeBench, quantBench, convertBench];

const bench: CommandModule = {
  command: 'bench',
  describe: 'benchmarks (JSON lines), each next to its reference tool',
  builder: (y) => {
    for (const b of benches) y.command(b);
    return y.demandCommand(1);
  },
  handler: () => {},
};
export default bench;
