// Runs a CommonJS bundle of the build (scripts/bundle.mjs) through vm.Script with a V8 code cache, the
// way Node 22's module.enableCompileCache() does for every module (Node 20 has no such thing for ES
// modules). A rank's start on a small machine is CPU-bound (`tprun bench launch`): as ~45 ES modules
// the world cost ~70 ms of CPU per rank in resolution, translation and compilation; one file whose
// bytecode comes from the cache costs a third of that.
//
// The cache lives in $TPRUN_CODE_CACHE (default: tprun-code-cache-UID in the temporary directory; 'off'
// for none), a directory only this user may write: cached bytecode is code, so a cache that someone else
// could have written is not read. One file per bundle, keyed by Node's version, the CPU architecture and
// the bundle file's inode, size and time, in a file named for the bundle's directory, so that two copies
// of tprun run alternately keep a cache each (V8 itself checks only the source's length and its own
// version and flags).
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Script } from 'node:vm';
import { pathToFileURL } from 'node:url';

export interface Bundle<T> {
  exports: T;
  /** Writes the cache when V8 had none it accepted: call it once the bundle's start-up code has run,
   *  so that the functions compiled lazily by then are in it too. */
  saveCache(): void;
}

/** Whether bundles are used at all: TPRUN_BUNDLE=0 loads the ES modules instead (debugging, tests). */
export const bundlesOn = (env: NodeJS.ProcessEnv = process.env): boolean => env.TPRUN_BUNDLE !== '0';

function cacheDir(env: NodeJS.ProcessEnv): string | undefined {
  const v = env.TPRUN_CODE_CACHE;
  if (v === 'off' || v === '0') return undefined;
  const uid = process.getuid?.();
  if (uid === undefined) return undefined;
  return v || join(tmpdir(), `tprun-code-cache-${uid}`);
}

/** A short hash of a string (FNV-1a, 32 bits) to tell cache files of different trees apart. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(36);
}

/** Only a real directory of ours that nobody else can write into is trusted. */
function trusted(dir: string): boolean {
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/**
 * Whether the files the bundle was made from (its `.inputs.json`, written by scripts/bundle.mjs) are as
 * they were: same size, none newer than the bundle. `npx tsc` alone rebuilds the ES modules but not the
 * bundles, and a rank must never run older code than the modules beside it.
 */
function current(file: string): boolean {
  try {
    const made = statSync(file).mtimeMs;
    const { inputs } = JSON.parse(readFileSync(`${file}.inputs.json`, 'utf8')) as { inputs: [string, number][] };
    const dir = dirname(file);
    for (const [rel, size] of inputs) {
      const st = statSync(join(dir, rel));
      if (st.size !== size || st.mtimeMs > made) return false;
    }
    return inputs.length > 0;
  } catch {
    return false;
  }
}

/** The bundle's exports, or undefined when there is no bundle (a build without esbuild) or it is stale. */
export function loadBundle<T>(file: string, env: NodeJS.ProcessEnv = process.env): Bundle<T> | undefined {
  if (!current(file)) return undefined;
  let src: string;
  let stamp: string;
  try {
    src = readFileSync(file, 'utf8');
    // Which build of the bundle: a build writes the file anew (a new modification time), so its cache gets
    // a new name, without reading the whole text through a hash.
    const st = statSync(file);
    stamp = [st.ino, st.size, Math.round(st.mtimeMs * 1000)].map((n) => n.toString(36)).join('.');
  } catch {
    return undefined;
  }
  const dir = cacheDir(env);
  // Per installed copy: two trees run alternately must not each replace the other's cache.
  const stem = `${basename(file)}-${fnv1a(dirname(file))}`;
  const name = `${stem}-${process.version}-${process.arch}-${stamp}.v8`;
  let cached: Buffer | undefined;
  if (dir && trusted(dir)) try { cached = readFileSync(join(dir, name)); } catch { /* none yet */ }
  // The wrapper opens on the bundle's first line, so its line numbers stay those of the file.
  const script = new Script(`(function (exports, require, module, __filename, __dirname, __bundleImport) {${src}\n})`, { filename: file, cachedData: cached });
  // What the bundle leaves to ES modules of their own it imports through this function (scripts/bundle.mjs):
  // import() inside a vm.Script needs vm's experimental module loader, whose callback a cached script loses.
  const url = pathToFileURL(file);
  const bundleImport = (spec: string) => import(spec.startsWith('.') ? new URL(spec, url).href : spec);
  const mod = { exports: {} as T };
  (script.runInThisContext() as (...a: unknown[]) => void).call(mod.exports, mod.exports, createRequire(file), mod, file, dirname(file), bundleImport);
  let stale = cached === undefined || script.cachedDataRejected === true;
  return {
    exports: mod.exports,
    saveCache() {
      if (!stale || !dir) return;
      stale = false;
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        if (!trusted(dir)) return;
        const path = join(dir, name);
        const tmp = `${path}.${process.pid}.tmp`;
        writeFileSync(tmp, script.createCachedData(), { mode: 0o600 });
        renameSync(tmp, path); // ranks that write at once each put a whole file in place
        // Caches of earlier builds of this bundle are of no further use.
        for (const f of readdirSync(dir)) if (f !== name && f.startsWith(`${stem}-`) && f.endsWith('.v8')) try { unlinkSync(join(dir, f)); } catch { /* raced */ }
      } catch { /* no cache this time: the next start compiles again */ }
    },
  };
}
