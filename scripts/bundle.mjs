// Build step after tsc: bundles what a launch runs before anything else can happen into single CommonJS
// files that src/util/bundle.ts loads in place of their ES modules: the world every rank loads before it can
// meet its peers (dist/rank/world.bundle.cjs, src/rank/world.ts) and the launcher's path from its
// command line to the spawned ranks (dist/launcher/launch.bundle.cjs, src/cli.ts). esbuild is a
// devDependency (a prebuilt binary package, nothing compiled or downloaded at install); a build without
// it leaves no bundles, and both load their ES modules as before (slower to start, same behaviour).
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dist, distInputs, loadEsbuild, root } from './module-inputs.mjs';

const bundles = [
  { entry: 'rank/init-world.js', out: 'rank/world.bundle.cjs', external: [] },
  // What a launch only sometimes needs stays an ES module of its own, loaded when needed: ssh ranks
  // (remote.js, with execa) and the trace writer (its per-process state is shared with other modules).
  // The bundle sits beside launch.js, so their relative paths still point at them.
  { entry: 'commands/launch.js', out: 'launcher/launch.bundle.cjs', external: ['./remote.js', '../util/trace.js'] },
  // A build's weight workers (src/engine/weight-jobs.ts): each thread loads what it runs as one file
  // instead of ~45 ES modules (≈ 50 ms of CPU less per worker on the 2-core machine). Its module state is
  // the worker's own (a thread of its own), so nothing is shared with the ES modules of the main thread.
  { entry: 'engine/weight-worker.js', out: 'engine/weight-worker.bundle.cjs', external: [] },
];
// Never a bundle of older sources beside newer modules.
for (const b of bundles) for (const f of [b.out, `${b.out}.inputs.json`]) rmSync(dist + f, { force: true });

// The record and its check are one module's (src/util/bundle.ts), built by the tsc before this step.
const { recordInputs } = await import(new URL('../dist/util/bundle.js', import.meta.url).href);

const esbuild = loadEsbuild('scripts/bundle.mjs', 'no bundles in dist/ (ranks and the launcher load the ES modules)');
if (!esbuild) process.exit(0);

for (const b of bundles) {
  const { metafile } = await esbuild.build({
    metafile: true,
    absWorkingDir: root,
    entryPoints: [dist + b.entry],
    outfile: dist + b.out,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20.19', // package.json's engines, whichever Node builds
    // Native addons and ESM-only packages stay packages of their own: they find their files from where
    // they are installed.
    external: ['zeromq', 'koffi', 'execa', 'cli-progress', ...b.external],
    // import.meta of the bundled ES modules (packages are required relative to it) is the bundle's URL.
    define: { 'import.meta.url': 'bundleUrl' },
    inject: [fileURLToPath(new URL('./bundle-import-meta.js', import.meta.url))],
    logLevel: 'warning',
  });
  // The bundle and the modules of ours it was made from, with their SHA-256: the loader takes the ES modules
  // instead once any of them is not what it was (`npx tsc` alone rebuilds the modules, not the bundles).
  recordInputs(dist + b.out, distInputs(metafile));
}
