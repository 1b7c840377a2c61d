// Build step after tsc: bundles what a launch or a build runs before anything else can happen into single
// CommonJS files that src/util/bundle.ts loads in place of their ES modules: the world every rank loads
// before it can meet its peers (dist/rank/world.bundle.cjs, src/rank/world.ts), the launcher's path from
// its command line to the spawned ranks (dist/launcher/launch.bundle.cjs, src/cli.ts), the commands whose
// start is measured against other tools (dist/commands/NAME.bundle.cjs, src/cli.ts) and the weight
// workers (dist/engine/weight-worker.bundle.cjs, src/engine/weight-jobs.ts). esbuild is a
// devDependency (a prebuilt binary package, nothing compiled or downloaded at install); a build without
// it leaves no bundles, and both load their ES modules as before (slower to start, same behaviour).
import { readFileSync, rmSync } from 'node:fs';
import { dirname, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dist, distInputs, loadEsbuild, root } from './module-inputs.mjs';

/** A command's bundle: the yargs CLI (commands/cli-run.js), the command's module and yargs itself. */
const commandBundle = (name) => ({
  entry: `commands/${name}.js`,
  contents: `export * from './cli-run.js';\nexport { default as command } from './${name}.js';\n`,
  out: `commands/${name}.bundle.cjs`,
  external: [],
});

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
  commandBundle('build'),
  commandBundle('convert'),
];

/**
 * import.meta.url of each bundled module: the URL of the file it was made from (scripts/bundle-import-meta.js),
 * written as a call the injected helpers answer at run time. A bundle's modules come from several folders of
 * dist/, so the bundle's own URL would point their relative names (`new URL('./weight-worker.js', ...)`)
 * at the wrong folder.
 */
/**
 * string-width (yargs' and cliui's, for laying out help text) builds an Intl.Segmenter and Unicode
 * property-of-strings regular expressions when it is loaded: ≈ a fifth of `tprun build`'s main-thread start
 * from the bundle (two copies of it), for help a build never renders. In a bundle each import of it is a
 * function that loads the package at its first call.
 */
const lazyStringWidth = {
  name: 'lazy-string-width',
  setup(build) {
    build.onResolve({ filter: /^string-width$/ }, async (args) => {
      if (args.pluginData === 'real') return undefined;
      const real = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: 'real' });
      if (real.errors.length) return { errors: real.errors };
      return { path: real.path, namespace: 'lazy-string-width' };
    });
    build.onLoad({ filter: /.*/, namespace: 'lazy-string-width' }, (args) => ({
      contents: `export default function stringWidth(...a) { return require(${JSON.stringify(args.path)}).default(...a); }\n`,
      resolveDir: dirname(args.path),
      loader: 'js',
    }));
  },
};

const moduleUrls = (outDir) => ({
  name: 'module-urls',
  setup(build) {
    build.onLoad({ filter: /\.m?js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      let url;
      if (args.path.startsWith(dist)) url = `moduleUrl(${JSON.stringify(relative(outDir, args.path).split(sep).join('/'))})`;
      else {
        // node_modules/NAME/… or node_modules/@SCOPE/NAME/…, the innermost node_modules.
        const parts = args.path.slice(args.path.lastIndexOf(`node_modules${sep}`) + 13).split(sep);
        const n = parts[0].startsWith('@') ? 2 : 1;
        url = `packageUrl(${JSON.stringify(parts.slice(0, n).join('/'))}, ${JSON.stringify(parts.slice(n).join('/'))})`;
      }
      return { contents: text.replaceAll('import.meta.url', url), loader: 'js' };
    });
  },
});
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
    // A command's bundle starts from a made-up module beside the command's own.
    ...(b.contents ? { stdin: { contents: b.contents, resolveDir: dirname(dist + b.entry) } } : { entryPoints: [dist + b.entry] }),
    outfile: dist + b.out,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20.19', // package.json's engines, whichever Node builds
    // Packages stay packages of their own, found where they are installed (native addons, ESM-only ones,
    // those only some runs load), but for the pure-JavaScript ones every run of the bundle loads: zod and
    // msgpackr, and yargs for a command.
    external: ['zeromq', 'koffi', 'execa', 'cli-progress', 'onnxruntime-node', 'webgpu', '@huggingface/tokenizers', ...b.external],
    plugins: [lazyStringWidth, moduleUrls(dirname(dist + b.out))],
    // What the plugin leaves (import.meta.url written otherwise) is the bundle's URL.
    define: { 'import.meta.url': 'bundleUrl' },
    inject: [fileURLToPath(new URL('./bundle-import-meta.js', import.meta.url))],
    logLevel: 'warning',
  });
  // The bundle and the modules of ours it was made from, with their SHA-256: the loader takes the ES modules
  // instead once any of them is not what it was (`npx tsc` alone rebuilds the modules, not the bundles).
  recordInputs(dist + b.out, distInputs(metafile));
}
