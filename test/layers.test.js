// The layering DESIGN.md promises, checked on the sources: src/core (tensors, dtypes, errors, half
// precision) stands on nothing; the sharding rules stand on core alone, never on file formats, engines or
// the world; rank and launcher know nothing of models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importEdges, violations, folderCycles } from './helpers/imports.js';

const SRC = fileURLToPath(new URL('../src', import.meta.url));
const MODEL_LAYERS = ['checkpoint', 'sharding', 'model', 'quantization', 'engine', 'commands', 'bench'];

test('the import scanner sees every kind of import, and only imports', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'tprun-layers-'));
  try {
    mkdirSync(path.join(root, 'core'));
    mkdirSync(path.join(root, 'checkpoint'));
    writeFileSync(path.join(root, 'checkpoint/errors.ts'), 'export class E {}\n');
    writeFileSync(path.join(root, 'core/a.ts'), [
      "// import { x } from '../engine/not-an-import.js';",
      "import type { E } from '../checkpoint/errors.js';",
      "export { E as F } from '../checkpoint/errors.js';",
      "import fs from 'node:fs';",
      "const s = \"from '../rank/also-not.js'\";",
      "export const load = () => import('../checkpoint/errors.js');",
      'import zod from \'zod\';', '',
    ].join('\n'));
    const edges = importEdges(root);
    // The type import, the re-export, the dynamic import and the package; not the comment or the string.
    assert.deepEqual(violations(edges, 'core', []).sort(), [
      'core/a.ts imports ../checkpoint/errors.js',
      'core/a.ts imports ../checkpoint/errors.js',
      'core/a.ts imports ../checkpoint/errors.js',
      'core/a.ts imports zod',
    ]);
    assert.deepEqual(violations(edges, 'core', ['checkpoint'], { packages: true }), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the cycle finder reports a cycle through three folders with its files, and none in a DAG', () => {
  /** @param {string} file @param {string} spec @param {string | null} to */
  const e = (file, spec, to) => ({ file, spec, from: file.split('/')[0], to });
  const dag = [e('a/x.ts', '../b/y.js', 'b'), e('b/y.ts', '../c/z.js', 'c'), e('a/w.ts', '../b/y.js', 'b')];
  assert.deepEqual(folderCycles(dag), []);
  assert.deepEqual(folderCycles([...dag, e('c/z.ts', '../a/x.js', 'a'), e('d/q.ts', 'zod', null)]), [[
    'a -> b (a/x.ts imports ../b/y.js; a/w.ts imports ../b/y.js)',
    'b -> c (b/y.ts imports ../c/z.js)',
    'c -> a (c/z.ts imports ../a/x.js)',
  ]]);
});

const edges = importEdges(SRC);

test('the scan covers the source tree', () => {
  // A scanner that found nothing would pass every rule below.
  assert.ok(edges.some((e) => e.file === path.join('sharding', 'rules.ts') && e.to === 'core'));
  assert.ok(edges.some((e) => e.from === 'checkpoint' && e.to === 'core'));
});

test('src/core imports nothing but itself and node builtins', () => {
  assert.deepEqual(violations(edges, 'core', []), []);
});

test('src/sharding stands on src/core alone (no checkpoint, engine, rank, launcher, quantization)', () => {
  assert.deepEqual(violations(edges, 'sharding', ['core']), []);
});

test('rank and launcher know nothing of models', () => {
  for (const layer of ['rank', 'launcher']) {
    const bad = edges.filter((e) => e.from === layer && e.to !== null && MODEL_LAYERS.includes(e.to));
    assert.deepEqual(bad.map((e) => `${e.file} imports ${e.spec}`), [], layer);
  }
});

test('no cycle between top-level folders of src/ (each layer stands on the ones below it)', () => {
  // A cycle makes two folders one layer in fact: neither can be read, tested or reused without the other.
  assert.deepEqual(folderCycles(edges), []);
});
