// Loads a CommonJS bundle of the build (scripts/bundle.mjs) in place of the ES modules it was made from.
// A rank's start on a small machine is CPU-bound (`tprun bench launch`): as ~45 ES modules the world cost
// ~70 ms of CPU per rank in Node 20's module resolution, translation and compilation; one CommonJS file
// costs about half of that. (A V8 code cache on top saved ~18 ms more per rank, but Node 20 checks neither
// a cache's payload nor which source it was made from: a corrupted or mismatched cache file crashed or ran
// old code, so there is none until Node's own module.enableCompileCache, which checks both.)
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { onOff } from './env.js';
import { tracing } from './events.js';

/** Whether bundles are used at all: TPRUN_BUNDLE=0 loads the ES modules instead (debugging, tests). */
export const bundlesOn = (env: NodeJS.ProcessEnv = process.env): boolean => onOff('TPRUN_BUNDLE', env);

/** A file of a bundle (it, or a module it was made from): its path from the bundle's folder, its size, its
 *  mtime (stat's mtimeMs, as recorded: the check's shortcut) and the SHA-256 of its bytes. */
type Input = [rel: string, size: number, mtimeMs: number, sha256: string];

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/**
 * Records, beside `bundle` (as `.inputs.json`), the bundle itself and the modules of ours it was made from
 * (scripts/bundle.mjs, at bundle time): what loadBundle checks them against. Contents, not times: a copy
 * of dist/ (cp -r, rsync without -t, a container layer) gives the modules new mtimes in whatever order it
 * copies them, and a loader that went by time alone ran the slower ES modules for no reason; an edit that
 * kept a module's size and an older time (cp -p of an earlier build) was run stale. The times are recorded
 * too, as a shortcut only: a file whose size and mtime are exactly as recorded is not hashed again. The bundle's own bytes: one
 * cut short (a full disk, an interrupted copy) made every rank die of `Unexpected end of input`, where
 * its ES modules would have run.
 */
export function recordInputs(bundle: string, modules: string[]): void {
  const entry = (abs: string): Input => {
    const bytes = readFileSync(abs);
    return [relative(dirname(bundle), abs), bytes.length, statSync(abs).mtimeMs, sha256(bytes)];
  };
  writeFileSync(`${bundle}.inputs.json`, JSON.stringify({ bundle: entry(bundle), inputs: modules.map(entry) }));
}

/** Whether the file `entry` names (from `dir`) is there and is what was recorded: 'missing', 'changed' or undefined (it is). */
function differs(dir: string, [rel, size, mtimeMs, hash]: Input): 'missing' | 'changed' | undefined {
  const path = join(dir, rel);
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st?.isFile()) return 'missing';
  if (st.size !== size) return 'changed';
  // Untouched since the build recorded it (an edit or a rebuild gives a new mtime; a copy too, and is
  // then hashed): what it was. Only an edit of the same size whose mtime was set back to the recorded
  // one exactly (touch -r) passes unhashed, and nothing of ours does that.
  if (st.mtimeMs === mtimeMs) return undefined;
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return 'missing';
  }
  return bytes.length !== size || sha256(bytes) !== hash ? 'changed' : undefined;
}

const isInput = (i: unknown): i is Input =>
  Array.isArray(i) && i.length === 4 && typeof i[0] === 'string' && typeof i[1] === 'number' && typeof i[2] === 'number' && typeof i[3] === 'string';

/**
 * Why the bundle must not run (undefined: it may): it is missing (a build without esbuild), its list of
 * inputs is, it is not byte for byte what the build wrote, or a module it was made from is gone or not
 * byte for byte what it was (`npx tsc` alone
 * rebuilds the ES modules, not the bundles, and a rank must never run older code than the modules beside
 * it). Only files whose size or mtime is not as recorded are hashed (differs). Measured on the 2-core
 * machine at load average ~5 (one current() call of the world bundle in a fresh process, 24 processes
 * each, interleaved): stat alone, the world's 45 modules and the bundle, median 2.0 ms (1.4-2.3 ms
 * quartiles); hashing them all (~240 KB of modules and the 386 KB bundle, as after a copy of dist/)
 * 7.6 ms (6.2-15 ms): 0.26x the cost on every start after a build, against ~35 ms the bundle saves.
 */
export function staleness(file: string, selfBytes?: Uint8Array): string | undefined {
  let list: string;
  try {
    list = readFileSync(`${file}.inputs.json`, 'utf8');
  } catch {
    if (!existsSync(file)) return 'it is not there (a build without esbuild)';
    return `${basename(file)}.inputs.json, the list of what it was made from, is missing`;
  }
  let self: Input, inputs: Input[];
  try {
    ({ bundle: self, inputs } = JSON.parse(list) as { bundle: Input; inputs: Input[] });
    if (!isInput(self) || !Array.isArray(inputs) || inputs.length === 0 || !inputs.every(isInput)) throw new Error('shape');
  } catch {
    return `${basename(file)}.inputs.json is not a list of the bundle and its modules with their SHA-256 (made by an older build?)`;
  }
  const dir = dirname(file);
  // Bytes the caller already read are judged by their hash alone, never by the mtime shortcut: a file
  // whose bytes become output (the SIMD seed's tables are copied into engines) must not pass unhashed
  // after a same-size corruption with its mtime restored (touch -r, cp -p of a damaged backup, bit-rot).
  const selfState = selfBytes ? (selfBytes.length !== self[1] || sha256(selfBytes) !== self[3] ? 'changed' : undefined) : differs(dir, self);
  switch (selfState) {
    case 'missing': return `${self[0]}, which the build wrote, is missing`;
    case 'changed': return `${self[0]} is not the file the build wrote (cut short or changed since)`;
  }
  for (const input of inputs) {
    switch (differs(dir, input)) {
      case 'missing': return `${input[0]}, which it was made from, is missing`;
      case 'changed': return `${input[0]} is not the module it was made from (rebuilt without the bundles, or edited)`;
    }
  }
  return undefined;
}

/** Bundles whose refusal this process has told of: each once. */
const told = new Set<string>();

/**
 * The bundle's exports, or undefined when there is no bundle or it is stale: the ES modules then run,
 * slower to start, same behaviour. What the bundle's own code throws as it runs (a knob refused at load)
 * is ours and reaches the caller: only a bundle that is not what the build wrote is passed over, by the
 * check above, never by catching what require throws (a SyntaxError of a cut-short file and one that
 * JSON.parse throws at load look alike). Why is said once on stderr where someone is looking (TPRUN_DEBUG set,
 * or a trace: `tprun --trace`, $TPRUN_TRACE), and nowhere else: a launch prints nothing of its own.
 */
export function loadBundle<T>(file: string): T | undefined {
  const why = staleness(file);
  if (why === undefined) return createRequire(import.meta.url)(file) as T;
  if ((process.env.TPRUN_DEBUG || tracing()) && !told.has(file)) {
    told.add(file);
    process.stderr.write(`tprun: ${file} not used, its ES modules are: ${why}\n`);
  }
  return undefined;
}

/** Whether the bundle may run: there, and made from the modules beside it as they are now (staleness).
 *  With `selfBytes` (the file's bytes as the caller read them) those bytes are hashed and checked on every
 *  call, whatever the file's mtime; the modules it was made from keep the size-and-mtime shortcut. */
export const current = (file: string, selfBytes?: Uint8Array): boolean => staleness(file, selfBytes) === undefined;
