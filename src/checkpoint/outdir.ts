// Output directories that appear complete or not at all, and that never cost the user a file tprun did
// not write. Everything is written into a temporary sibling and renamed into place at the end; the sibling
// is removed on failure, on exit and on SIGTERM / SIGINT (how the launcher stops the other ranks when one
// fails). An existing --out is replaced only when it is empty or tprun wrote it (its config.json carries
// "producer": "tprun"); --force also replaces other directories, but nothing ever replaces the current
// directory, home, the input, or a directory holding any of them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InputError } from '../core/errors.js';

/** The marker in config.json of every directory tprun writes (checkpoints and engines). */
export const PRODUCER = 'tprun';

/** What the output check needs to know besides the path. `ConvertOptions` fits (its `model` is an input). */
export interface OutGuard {
  /** Replace an existing directory that tprun did not write (never the protected ones). */
  force?: boolean;
  /** The input model or checkpoint. */
  model?: string;
  /** Further inputs (tokenizer directory, ...). */
  inputs?: (string | undefined)[];
}

/** Real path of `p`, also for a path that does not exist yet (its nearest existing ancestor resolved). */
function realish(p: string): string {
  const abs = path.resolve(p);
  try {
    return fs.realpathSync(abs);
  } catch {
    const parent = path.dirname(abs);
    return parent === abs ? abs : path.join(realish(parent), path.basename(abs));
  }
}

function holds(dir: string, p: string): boolean {
  return p === dir || p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
}

/** True when `dir`'s config.json says tprun wrote it. */
export function isTprunDir(dir: string): boolean {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))?.producer === PRODUCER;
  } catch {
    return false;
  }
}

/**
 * Throws an InputError (exit 2, one line naming the path and why) unless `out` may be written: absent,
 * an empty directory, a directory tprun wrote, or (with --force) another directory that is none of the
 * protected ones.
 */
export function checkOutDir(out: string, g: OutGuard = {}): void {
  const shown = `--out ${out}`;
  const real = realish(out);
  const never = (why: string) => new InputError(`${shown}: ${why}; tprun never replaces it (not even with --force), choose another directory`);
  const protectedPaths: [string, string][] = [[realish(process.cwd()), 'the current directory']];
  try { protectedPaths.push([realish(os.homedir()), 'your home directory']); } catch { /* no home */ }
  for (const p of [g.model, ...(g.inputs ?? [])]) if (p) protectedPaths.push([realish(p), `the input ${p}`]);
  for (const [p, what] of protectedPaths) {
    if (p === real) throw never(`is ${what}`);
    if (holds(real, p)) throw never(`contains ${what}`);
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path.resolve(out));
  } catch {
    return; // absent: nothing to replace
  }
  if (st.isSymbolicLink()) throw new InputError(`${shown}: is a symbolic link; give the directory it points to, or another path`);
  if (!st.isDirectory()) throw new InputError(`${shown}: exists and is not a directory; tprun replaces only directories it wrote`);
  if (fs.readdirSync(out).length === 0 || isTprunDir(out) || g.force) return;
  throw new InputError(`${shown}: is not empty and was not written by tprun (no "producer": "${PRODUCER}" in its config.json); remove it, choose another directory, or pass --force to replace it`);
}

/** Prefixes a system error (ENOSPC, EIO, EDQUOT, ...) with the file being written when it does not say. */
export function withPath(e: unknown, file: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err instanceof Error && typeof err.code === 'string' && !err.message.includes(file)) {
    err.message = `${file}: ${err.message}`;
  }
  return e;
}

// --- temporary siblings -------------------------------------------------------------------------

const live = new Set<string>();

function cleanupAll(): void {
  for (const d of live) fs.rmSync(d, { recursive: true, force: true });
  live.clear();
}

function onSignal(sig: NodeJS.Signals): void {
  cleanupAll();
  unhook();
  // The handlers exist only while a write is under way: once removed, the signal's default action (or
  // the application's own handlers, which have already run) decides what happens to the process.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

function hook(): void {
  if (live.size > 0) return;
  process.on('exit', cleanupAll);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

function unhook(): void {
  if (live.size > 0) return;
  process.removeListener('exit', cleanupAll);
  process.removeListener('SIGTERM', onSignal);
  process.removeListener('SIGINT', onSignal);
}

/** Name of the temporary sibling of `out` for one job (all ranks must agree on `tag`). */
export function tempSibling(out: string, tag: string): string {
  const abs = path.resolve(out);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.tmp-${tag}`);
}

/** Registers `dir` for removal unless committed; creates it. */
export function openTemp(dir: string): void {
  hook();
  live.add(dir);
  fs.mkdirSync(dir, { recursive: true });
}

export function discardTemp(dir: string): void {
  live.delete(dir);
  fs.rmSync(dir, { recursive: true, force: true });
  unhook();
}

/**
 * Renames the finished temporary dir onto `out`, replacing an older `out` only after success and only
 * where checkOutDir allows it (checked again here: this is also where ranks on other nodes write their
 * own copy). On refusal the temporary dir is removed and the InputError thrown.
 */
export function commitTemp(dir: string, out: string, g: OutGuard = {}): void {
  const abs = path.resolve(out);
  try {
    checkOutDir(out, g);
    if (fs.existsSync(abs)) {
      const old = `${dir}.old`;
      fs.renameSync(abs, old);
      fs.renameSync(dir, abs);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(dir, abs);
    }
  } catch (e) {
    discardTemp(dir);
    throw e;
  }
  live.delete(dir);
  unhook();
}

/** Forget `dir` in this process without deleting it (another rank owns the rename). */
export function releaseTemp(dir: string): void {
  live.delete(dir);
  unhook();
}
