// The world's implementation behind `initWorld()` (./world.ts): join the job's ranks and get collectives
// over them. The build bundles this module and everything it imports into dist/rank/world.bundle.cjs,
// which ./world.ts loads; loaded as ES modules it is the fallback (TPRUN_BUNDLE=0).
//
// The world owns the lifecycle and point-to-point messages (./peer-world.ts over ./links.ts); the
// collectives are algorithms over that (./collectives/, "direct": one hop, results bit-identical on
// every rank), run over the whole world or over a group of its ranks (World.newGroup, ./group.ts).
// Environment knobs: TPRUN_COMM_TIMEOUT_MS (default 600000), TPRUN_MAX_MESSAGE_BYTES (default 4 GiB),
// TPRUN_SPIN_US (busy-wait before sleeping; default 10000, 0 when ranks outnumber cores),
// TPRUN_BIND=none (no CPU binding), TPRUN_TRANSPORT=zmq (no shared memory), TPRUN_ADVERTISE_ADDR.
import type { World } from './types.js';
import { detectIdentity, type Env } from './identity.js';
import { wholeNumber } from '../util/env.js';
import { exitTwoIfUncaught, exitTwoOnUncaughtInput } from './input-exit.js';

export { CommError } from './inbox.js';
export { detectIdentity } from './identity.js';

export interface InitWorldOptions {
  /** Default timeout of every collective, and of the rendezvous (ms). Env: TPRUN_COMM_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Largest message accepted from a peer (bytes). Env: TPRUN_MAX_MESSAGE_BYTES. Default 4 GiB. */
  maxMessageBytes?: number;
  env?: Env;
}

/** A whole number >= 0, or undefined where unset (../util/env.ts: anything else is an InputError, exit 2). */
const envNum = (env: Env, name: string): number | undefined => wholeNumber(name, undefined, env);

export async function initWorld(opts: InitWorldOptions = {}): Promise<World> {
  const env = opts.env ?? process.env;
  let rank: number | undefined;
  try {
    const id = detectIdentity(env);
    rank = id.rank;
    const timeoutMs = opts.timeoutMs ?? envNum(env, 'TPRUN_COMM_TIMEOUT_MS') ?? 600_000;
    const { inWorld: _inWorld, ...identity } = id;
    // A world of one is loaded only when asked for: every rank of a real job would load it for nothing.
    if (id.size === 1) {
      const alone = new (await import('./local-world.js')).LocalWorld(identity);
      exitTwoOnUncaughtInput(undefined);
      return alone;
    }
    const { PeerWorld } = await import('./peer-world.js');
    const w = new PeerWorld(identity, timeoutMs, opts.maxMessageBytes ?? envNum(env, 'TPRUN_MAX_MESSAGE_BYTES') ?? 2 ** 32,
      envNum(env, 'TPRUN_SPIN_US'));
    await w.start(env);
    exitTwoOnUncaughtInput(w.rank);
    return w;
  } catch (e) {
    exitTwoIfUncaught(e, rank);
    throw e;
  }
}
