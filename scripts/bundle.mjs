// Build step after tsc: bundles what every rank loads before it can meet its peers into one CommonJS
// file, dist/rank/world.bundle.cjs, which src/rank/world.ts runs with a V8 code cache. esbuild is a
// devDependency (a prebuilt binary package, nothing compiled or downloaded at install); a build without
// it leaves no bundle, and ranks load the ES modules as before (slower to start, same behaviour).
import { createRequire } from 'node:module';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const out = `${dist}rank/world.bundle.cjs`;
rmSync(out, { force: true }); // never a bundle of older sources beside newer modules

let esbuild;
try {
  // require() resolution, which NODE_PATH also reaches.
  esbuild = createRequire(import.meta.url)('esbuild');
} catch {
  process.stderr.write('scripts/bundle.mjs: esbuild is not installed; no dist/rank/world.bundle.cjs (ranks load the ES modules)\n');
  process.exit(0);
}

await esbuild.build({
  entryPoints: [`${dist}rank/init-world.js`],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: `node${process.versions.node.split('.')[0]}`,
  // Native addons stay packages of their own: they find their binaries from where they are installed.
  external: ['zeromq', 'koffi'],
  // import.meta of the bundled ES modules (koffi is required relative to it) is the bundle's own URL.
  define: { 'import.meta.url': 'bundleUrl' },
  inject: [fileURLToPath(new URL('./bundle-import-meta.js', import.meta.url))],
  logLevel: 'warning',
});
