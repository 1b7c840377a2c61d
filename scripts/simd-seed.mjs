// Build step after tsc: keeps the SIMD converter's seed (its two tables and the module's bytes,
// src/engine/weight-convert.ts makeSeedParts) in dist/engine/half-simd.seed, so a build's first conversion
// reads it instead of making it (src/engine/simd-seed-file.ts says why), with the record of the modules it
// was made from beside it (src/util/bundle.ts recordInputs): the modules weight-convert.js imports, all of
// them, found by following their relative imports. A module changed since (`npx tsc` alone) makes the file
// stale, and it is then not used. Nothing here needs esbuild or the network.
import { readFileSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const entries = ['engine/weight-convert.js', 'engine/simd-seed-file.js'].map((f) => dist + f);
const { SEED_FILE, writeSeedFile } = await import(new URL('../dist/engine/simd-seed-file.js', import.meta.url).href);
const { makeSeedParts } = await import(new URL('../dist/engine/weight-convert.js', import.meta.url).href);
const { recordInputs } = await import(new URL('../dist/util/bundle.js', import.meta.url).href);

for (const f of [SEED_FILE, `${SEED_FILE}.inputs.json`]) rmSync(f, { force: true });

/** Every dist module reachable from `roots` by relative static or dynamic imports. */
function closure(roots) {
  const seen = new Set();
  const todo = [...roots];
  while (todo.length) {
    const f = todo.pop();
    if (seen.has(f)) continue;
    seen.add(f);
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/(?:from\s*|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) todo.push(resolve(dirname(f), m[1]));
  }
  return [...seen].sort();
}

const parts = makeSeedParts();
if (!parts) {
  process.stderr.write('scripts/simd-seed.mjs: no SIMD seed on this runtime (the transposed tables differ); builds make none either\n');
  process.exit(0);
}
writeSeedFile(SEED_FILE, parts);
recordInputs(SEED_FILE, closure(entries));
