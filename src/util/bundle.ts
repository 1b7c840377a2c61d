// Loads a CommonJS bundle of the build (scripts/bundle.mjs) in place of the ES modules it was made from.
// A rank's start on a small machine is CPU-bound (`tprun bench launch`): as ~45 ES modules the world cost
// ~70 ms of CPU per rank in Node 20's module resolution, translation and compilation; one CommonJS file
// costs about half of that. (A V8 code cache on top saved ~18 ms more per rank, but Node 20 checks neither
// a cache's payload nor which source it was made from: a corrupted or mismatched cache file crashed or ran
// old code, so there is none until Node's own module.enableCompileCache, which checks both.)
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Whether bundles are used at all: TPRUN_BUNDLE=0 loads the ES modules instead (debugging, tests). */
export const bundlesOn = (env: NodeJS.ProcessEnv = process.env): boolean => env.TPRUN_BUNDLE !== '0';

/**
 * Whether the files the bundle was made from (its `.inputs.json`, written by scripts/bundle.mjs) are as
 * they were: same size, none newer than the bundle. `npx tsc` alone rebuilds the ES modules but not the
 * bundles, and a rank must never run older code than the modules beside it.
 */
export function current(file: string): boolean {
  try {
    const made = statSync(file).mtimeMs;
    const { inputs } = JSON.parse(readFileSync(`${file}.inputs.json`, 'utf8')) as { inputs: [string, number][] };
    const dir = dirname(file);
    for (const [rel, size] of inputs) {
      const st = statSync(join(dir, rel));
      if (st.size !== size || st.mtimeMs > made) return false;
    }
    return inputs.length > 0;
  } catch {
    return false;
  }
}

/** The bundle's exports, or undefined when there is no bundle (a build without esbuild) or it is stale. */
export function loadBundle<T>(file: string): T | undefined {
  return current(file) ? (createRequire(import.meta.url)(file) as T) : undefined;
}
