// Build step after tsc: keeps the SIMD converter's seed (its two tables and the module's bytes,
// src/engine/weight-convert.ts makeSeedParts) in dist/engine/half-simd.seed, so a build's first conversion
// reads it instead of making it (src/engine/simd-seed-file.ts says why), with the record of the modules it
// was made from beside it (src/util/bundle.ts recordInputs): every module of ours weight-convert.js and
// simd-seed-file.js import, as esbuild resolves them (./module-inputs.mjs, scripts/bundle.mjs's way). A
// module changed since (`npx tsc` alone) makes the file stale, and it is then not used. A build without
// esbuild keeps no seed: each build makes it at run time (same bytes, slower start).
import { rmSync } from 'node:fs';
import { dist, distInputs, loadEsbuild, root } from './module-inputs.mjs';

const entries = ['engine/weight-convert.js', 'engine/simd-seed-file.js'].map((f) => dist + f);
const { SEED_FILE, writeSeedFile } = await import(new URL('../dist/engine/simd-seed-file.js', import.meta.url).href);
const { makeSeedParts } = await import(new URL('../dist/engine/weight-convert.js', import.meta.url).href);
const { recordInputs } = await import(new URL('../dist/util/bundle.js', import.meta.url).href);

for (const f of [SEED_FILE, `${SEED_FILE}.inputs.json`]) rmSync(f, { force: true });

const esbuild = loadEsbuild('scripts/simd-seed.mjs', 'no SIMD seed in dist/ (builds make it at run time)');
if (!esbuild) process.exit(0);
// Nothing is written: only the metafile is wanted. Packages stay outside (they are not recorded).
const { metafile } = await esbuild.build({
  metafile: true,
  write: false,
  absWorkingDir: root,
  entryPoints: entries,
  outdir: `${dist}engine/`,
  bundle: true,
  platform: 'node',
  format: 'esm',
  packages: 'external',
  logLevel: 'warning',
});

const parts = makeSeedParts();
if (!parts) {
  process.stderr.write('scripts/simd-seed.mjs: no SIMD seed on this runtime (the transposed tables differ); builds make none either\n');
  process.exit(0);
}
writeSeedFile(SEED_FILE, parts);
recordInputs(SEED_FILE, distInputs(metafile).sort());
