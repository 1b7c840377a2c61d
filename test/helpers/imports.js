// The import graph of a TypeScript source tree, by folder: what test/layers.test.js checks the layering
// against. TypeScript's own pre-processor finds the specifiers (static, `import type`, `export … from`,
// dynamic `import()`), so comments and strings that merely mention a path do not count.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/**
 * @typedef {object} ImportEdge
 * @property {string} file      importing file, relative to the root (e.g. `sharding/rules.ts`)
 * @property {string} spec      the specifier as written
 * @property {string} from      the importing file's top-level folder (`.` for files at the root)
 * @property {string | null} to the imported file's top-level folder; null for packages and node: builtins
 */

/** @param {string} dir @returns {string[]} */
function tsFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** @param {string} root @param {string} abs */
function folderOf(root, abs) {
  const parts = path.relative(root, abs).split(path.sep);
  return parts.length > 1 ? parts[0] : '.';
}

/** Every import in every .ts file under `root`. @param {string} root @returns {ImportEdge[]} */
export function importEdges(root) {
  /** @type {ImportEdge[]} */
  const edges = [];
  for (const abs of tsFiles(root)) {
    const info = ts.preProcessFile(readFileSync(abs, 'utf8'), true, true);
    for (const { fileName: spec } of info.importedFiles) {
      const to = spec.startsWith('.') ? folderOf(root, path.resolve(path.dirname(abs), spec)) : null;
      edges.push({ file: path.relative(root, abs), spec, from: folderOf(root, abs), to });
    }
  }
  return edges;
}

/**
 * Imports from folder `from` that leave it for a folder not in `allowed` (packages count as leaving
 * unless `packages` is true; node: builtins never do). One readable line per offending import.
 * @param {ImportEdge[]} edges @param {string} from @param {string[]} allowed @param {{ packages?: boolean }} [o]
 */
export function violations(edges, from, allowed, o = {}) {
  return edges
    .filter((e) => e.from === from)
    .filter((e) => (e.to === null ? !e.spec.startsWith('node:') && !o.packages : e.to !== from && !allowed.includes(e.to)))
    .map((e) => `${e.file} imports ${e.spec}`);
}
