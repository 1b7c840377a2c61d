// `initWorld()`: join the job's ranks and get collectives over them (./init-world.ts).
//
// Every rank pays for loading the world before it can meet its peers, and on a small machine ranks start
// CPU-bound (`tprun bench launch`). So the build bundles the world into one CommonJS file
// (dist/rank/world.bundle.cjs, scripts/bundle.mjs, ../util/bundle.ts); the ES modules stay the fallback for a build without the bundle and for TPRUN_BUNDLE=0. The bundle holds
// its own copies of the world's modules: CommError is one class per process (./comm-error.ts), and the
// rest of the world's state lives in the world object that initWorld returns.
import { fileURLToPath } from 'node:url';
import type { World } from './types.js';
import type * as Impl from './init-world.js';
import { bundlesOn, loadBundle } from '../util/bundle.js';
import { detectIdentity, type Env } from './identity.js';

export { CommError } from './comm-error.js';
export { detectIdentity } from './identity.js';
export type { InitWorldOptions } from './init-world.js';

let impl: Promise<typeof Impl> | undefined;

/** The world's size as the environment gives it; undefined where it is not valid (initWorld says why). */
function sizeOf(env: Env): number | undefined {
  try {
    return detectIdentity(env).size;
  } catch {
    return undefined;
  }
}

function load(env: Env): Promise<typeof Impl> {
  // A world of one (`build` or `convert` at --tp 1, alone) is a local queue: init-world.ts loads none of
  // the peers' modules for it, so its few ES modules (or those of the command's bundle) are all it needs,
  // where the world's bundle would compile ~390 KB of rendezvous, ZeroMQ links and shared memory first.
  if (sizeOf(env) === 1) return import('./init-world.js');
  const b = bundlesOn() ? loadBundle<typeof Impl>(fileURLToPath(new URL('./world.bundle.cjs', import.meta.url))) : undefined;
  return b ? Promise.resolve(b) : import('./init-world.js');
}

export async function initWorld(opts: Impl.InitWorldOptions = {}): Promise<World> {
  return (await (impl ??= load(opts.env ?? process.env))).initWorld(opts);
}
