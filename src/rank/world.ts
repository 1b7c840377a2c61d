// `initWorld()`: join the job's ranks and get collectives over them (./init-world.ts).
//
// Every rank pays for loading the world before it can meet its peers, and on a small machine ranks start
// CPU-bound (`tprun bench launch`). So the build bundles the world into one CommonJS file
// (dist/rank/world.bundle.cjs, scripts/bundle.mjs) that runs with a V8 code cache (../util/code-cache.ts);
// the ES modules stay the fallback for a build without the bundle and for TPRUN_BUNDLE=0. The bundle holds
// its own copies of the world's modules: CommError is one class per process (./comm-error.ts), and the
// rest of the world's state lives in the world object that initWorld returns.
import { fileURLToPath } from 'node:url';
import type { World } from './types.js';
import type * as Impl from './init-world.js';
import { bundlesOn, loadBundle } from '../util/code-cache.js';

export { CommError } from './comm-error.js';
export { detectIdentity } from './identity.js';
export type { InitWorldOptions } from './init-world.js';

let impl: Promise<{ mod: typeof Impl; saveCache?: () => void }> | undefined;

function load(): Promise<{ mod: typeof Impl; saveCache?: () => void }> {
  const b = bundlesOn() ? loadBundle<typeof Impl>(fileURLToPath(new URL('./world.bundle.cjs', import.meta.url))) : undefined;
  return b ? Promise.resolve({ mod: b.exports, saveCache: () => b.saveCache() }) : import('./init-world.js').then((mod) => ({ mod }));
}

export async function initWorld(opts: Impl.InitWorldOptions = {}): Promise<World> {
  const { mod, saveCache } = await (impl ??= load());
  const w = await mod.initWorld(opts);
  // One rank per machine writes the cache, with the start-up code compiled by now.
  if (w.localRank === 0) saveCache?.();
  return w;
}
