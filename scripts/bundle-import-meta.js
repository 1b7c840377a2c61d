// Injected into every bundle by scripts/bundle.mjs: what `import.meta.url` means in the bundled modules.
// Each of ours gets the URL of the ES module it was made from, found from the bundle's own place (dist/
// moves as one folder), so what it names relative to itself (a worker's file, the SIMD seed, a module
// it imports by URL) is what the ES module names; a bundled package's is the URL of its own file where
// the package lets its package.json be resolved (yargs finds its locales so), else the bundle's.
const { dirname, join } = require('node:path');
const { pathToFileURL } = require('node:url');

export const bundleUrl = pathToFileURL(__filename).href;

/** The URL of the module at `rel` from the bundle's folder. */
export const moduleUrl = (rel) => pathToFileURL(join(__dirname, rel)).href;

/** Where each package bundled in was found (its folder, or null: not resolvable), looked up once. */
const packageDirs = new Map();

/** The URL of the file at `rel` inside the installed package `name`, as Node resolves it from the bundle. */
export function packageUrl(name, rel) {
  if (!packageDirs.has(name)) {
    try {
      packageDirs.set(name, dirname(require.resolve(`${name}/package.json`)));
    } catch {
      packageDirs.set(name, null);
    }
  }
  const dir = packageDirs.get(name);
  return dir === null ? bundleUrl : pathToFileURL(join(dir, rel)).href;
}
