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

/**
 * Cycles among top-level folders: for each strongly connected group of folders (Tarjan), one shortest
 * cycle through it, each step written with the files that make it, e.g.
 * `util -> launcher (util/trace.ts imports ../launcher/events.js)`. Empty when the folders form a DAG.
 * @param {ImportEdge[]} edges @returns {string[][]}
 */
export function folderCycles(edges) {
  /** @type {Map<string, Map<string, string[]>>} folder -> imported folder -> the imports that make the step */
  const graph = new Map();
  /** @param {string} v */
  const out = (v) => graph.get(v) ?? graph.set(v, new Map()).get(v) ?? new Map();
  for (const e of edges) {
    if (e.to === null || e.to === e.from) continue;
    const step = out(e.from);
    step.set(e.to, [...(step.get(e.to) ?? []), `${e.file} imports ${e.spec}`]);
    out(e.to);
  }
  /** @type {string[][]} */
  const groups = [];
  /** @type {Map<string, number>} */ const index = new Map();
  /** @type {string[]} */ const stack = [];
  /** @param {string} v @returns {number} */
  const visit = (v) => {
    const i = index.size;
    let l = i;
    index.set(v, i);
    stack.push(v);
    for (const w of out(v).keys()) {
      if (!index.has(w)) l = Math.min(l, visit(w));
      else if (stack.includes(w)) l = Math.min(l, index.get(w) ?? l);
    }
    if (l === i) {
      const group = stack.splice(stack.indexOf(v));
      if (group.length > 1) groups.push(group.sort());
    }
    return l;
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);

  return groups.map((group) => {
    // Breadth-first from the group's first folder back to itself, staying inside the group.
    const start = group[0];
    /** @type {Map<string, string>} */ const prev = new Map();
    const queue = [start];
    for (let v = queue.shift(); v !== undefined && !prev.has(start); v = queue.shift()) {
      for (const w of out(v).keys()) {
        if (!group.includes(w) || prev.has(w)) continue;
        prev.set(w, v);
        queue.push(w);
      }
    }
    const cycle = [start];
    for (let v = prev.get(start); v !== undefined && v !== start; v = prev.get(v)) cycle.unshift(v);
    cycle.unshift(start);
    return cycle.slice(0, -1).map((v, i) => `${v} -> ${cycle[i + 1]} (${(out(v).get(cycle[i + 1]) ?? []).join('; ')})`);
  });
}
