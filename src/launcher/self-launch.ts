// Commands that need several ranks start them themselves (like `trtllm-build --workers`): outside a
// world the same CLI invocation is re-executed under the launcher with n ranks; inside one (tprun -n,
// mpirun, srun) the command joins it.
import { accessSync, constants as fsConstants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { World } from '../rank/types.js';
import { detectIdentity, joinsWorld } from '../rank/identity.js';
import { InputError, isInputError } from '../core/errors.js';
import { namingRank } from '../rank/input-exit.js';

export interface RunDistributedOptions {
  /** GPU binding for the ranks that get started ('auto' | 'none' | '0,1,...'). */
  gpus?: string;
  tagOutput?: boolean;
  timeoutSec?: number;
  /** Launcher output: no progress bars/lines (quiet), or JSON messages (json). */
  quiet?: boolean;
  json?: boolean;
  /** Chrome trace of all ranks. */
  trace?: string;
}

/** A rank of the job started by runDistributed failed; the launcher has already said which and how. */
export class RankFailure extends Error {
  readonly reported = true;
  constructor(readonly exitCode: number) {
    super(`a rank failed (exit code ${exitCode})`);
    this.name = 'RankFailure';
  }
}

/** The world has the wrong number of ranks for this command (exit code 2). */
export class WorldSizeError extends Error {
  readonly exitCode = 2;
}

async function inWorld(body: (world: World) => Promise<void>): Promise<void> {
  // Loaded here: the process that only launches the ranks never joins a world, and the world's modules
  // (ZeroMQ's native addon among them) cost ~85 ms of CPU on a small machine.
  const { initWorld } = await import('../rank/world.js');
  const world = await initWorld();
  try {
    await body(world);
  } catch (e) {
    // Fail now, without waiting for the peers' goodbyes: a rank that lingered in close() would let its
    // victims exit first, and the launcher would name one of them as the rank that failed.
    await world.close({ abort: true }).catch(() => undefined);
    // One rank's bad input (its own rank file, say) is named by that rank: the launcher shows tprun's lines
    // alike from several ranks once, and ranks do not all meet the same input.
    throw world.size > 1 && isInputError(e) ? new InputError(namingRank(e.message, world.rank), { cause: e }) : e;
  }
  await world.close();
}

export async function runDistributed(n: number, body: (world: World) => Promise<void>, opts: RunDistributedOptions = {}): Promise<void> {
  if (!Number.isInteger(n) || n < 1) throw new WorldSizeError(`runDistributed: the number of ranks must be a positive integer (got ${n})`);
  const id = detectIdentity();
  if (joinsWorld(n, id)) {
    if (id.size !== n) {
      throw new WorldSizeError(`this command needs ${n} ranks but runs in a world of ${id.size} (started by ${id.source}); start it with -n ${n}`);
    }
    return inWorld(body);
  }
  if (n === 1) {
    // Alone there is no launcher to merge spans: this process writes the trace itself at exit.
    if (opts.trace) {
      const dir = dirname(resolve(opts.trace));
      try {
        accessSync(dir, fsConstants.W_OK);
      } catch {
        throw Object.assign(new Error(`--trace ${opts.trace}: directory ${dir} does not exist or is not writable`), { exitCode: 2 });
      }
      process.env.TPRUN_TRACE = opts.trace;
    }
    return inWorld(body);
  }
  // Loaded only here: ranks that merely join a world never pay for the launcher (execa etc.).
  const { launch } = await import('./launch.js');
  const code = await launch({
    n,
    command: [process.execPath, ...process.execArgv, ...process.argv.slice(1)],
    gpus: opts.gpus,
    tagOutput: opts.tagOutput,
    timeoutSec: opts.timeoutSec,
    quiet: opts.quiet,
    json: opts.json,
    trace: opts.trace,
  });
  if (code !== 0) throw new RankFailure(code);
}
