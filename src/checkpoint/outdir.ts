// Output directories that appear complete or not at all: everything is written into a temporary
// sibling, renamed into place at the end; the sibling is removed on failure, on exit and on SIGTERM /
// SIGINT (how the launcher stops the other ranks when one fails).
import fs from 'node:fs';
import path from 'node:path';

const live = new Set<string>();
let hooked = false;

function cleanupAll(): void {
  for (const d of live) fs.rmSync(d, { recursive: true, force: true });
  live.clear();
}

function onSignal(sig: NodeJS.Signals): void {
  cleanupAll();
  process.exit(sig === 'SIGINT' ? 130 : 143);
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', cleanupAll);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

/** Name of the temporary sibling of `out` for one job (all ranks must agree on `tag`). */
export function tempSibling(out: string, tag: string): string {
  const abs = path.resolve(out);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.tmp-${tag}`);
}

/** Registers `dir` for removal unless committed; creates it. */
export function openTemp(dir: string): void {
  hook();
  fs.mkdirSync(dir, { recursive: true });
  live.add(dir);
}

export function discardTemp(dir: string): void {
  live.delete(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Renames the finished temporary dir onto `out`, replacing an older `out` only after success. */
export function commitTemp(dir: string, out: string): void {
  const abs = path.resolve(out);
  if (fs.existsSync(abs)) {
    const old = `${dir}.old`;
    fs.renameSync(abs, old);
    fs.renameSync(dir, abs);
    fs.rmSync(old, { recursive: true, force: true });
  } else {
    fs.renameSync(dir, abs);
  }
  live.delete(dir);
}

/** Forget `dir` in this process without deleting it (another rank owns the rename). */
export function releaseTemp(dir: string): void {
  live.delete(dir);
}
