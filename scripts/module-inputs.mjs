// The one way the build steps find which of our modules an output was made from (scripts/bundle.mjs's
// bundles, scripts/simd-seed.mjs's seed): esbuild's own resolution of the imports, read from its metafile,
// so a record never lists other modules than a bundle of the same entries would hold.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../', import.meta.url));
export const dist = `${root}dist/`;

/** esbuild (a devDependency), or undefined where it is not installed; `script` says so on stderr. */
export function loadEsbuild(script, without) {
  try {
    // require() resolution, which NODE_PATH also reaches.
    return createRequire(import.meta.url)('esbuild');
  } catch {
    process.stderr.write(`${script}: esbuild is not installed; ${without}\n`);
    return undefined;
  }
}

/**
 * The modules of ours in an esbuild metafile, as absolute paths. The packages are not listed:
 * where npm puts them differs between this tree and an installed tprun.
 */
export function distInputs(metafile) {
  return Object.keys(metafile.inputs).map((f) => resolve(root, f)).filter((abs) => abs.startsWith(dist));
}
