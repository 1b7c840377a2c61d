// Process groups of local ranks: who is still in one (ignoring zombies, which a container's init may
// never reap and which cannot be killed anyway), and who in them is stopped.
import { readdirSync, readFileSync } from 'node:fs';

interface ProcStat {
  pid: number;
  state: string;
  pgrp: number;
}

/** Every process of /proc with its state and process group, or undefined without /proc. */
function scanProc(): ProcStat[] | undefined {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return undefined;
  }
  const out: ProcStat[] = [];
  for (const p of pids) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses, so cut at the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.push({ pid: Number(p), state: f[0], pgrp: Number(f[2]) });
  }
  return out;
}

/** Live (non-zombie) members of process group `pgid`. */
export function groupMembers(pgid: number): number[] {
  const all = scanProc();
  if (!all) {
    // No /proc: ask the kernel whether anything is in the group at all.
    try {
      process.kill(-pgid, 0);
      return [pgid];
    } catch {
      return [];
    }
  }
  return all.filter((p) => p.state !== 'Z' && p.pgrp === pgid).map((p) => p.pid);
}

/** The stopped (state T: SIGSTOP, SIGTSTP, ...) members of each of `pgids`, from one scan of /proc. */
export function stoppedMembers(pgids: number[]): Map<number, number[]> {
  const want = new Set(pgids);
  const out = new Map<number, number[]>();
  for (const p of scanProc() ?? []) {
    if (p.state !== 'T' || !want.has(p.pgrp)) continue;
    const list = out.get(p.pgrp) ?? [];
    list.push(p.pid);
    out.set(p.pgrp, list);
  }
  return out;
}

/** Cheap first check before scanning /proc: false when the group has no process at all. */
export function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Waits up to `graceMs` for the groups to empty (they were sent SIGTERM), then SIGKILLs what is left.
 */
export async function reapGroups(pgids: number[], graceMs: number): Promise<void> {
  const left = () => pgids.filter((g) => groupExists(g) && groupMembers(g).length > 0);
  const deadline = Date.now() + graceMs;
  let alive = left();
  while (alive.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    alive = left();
  }
  for (const g of alive) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // gone just now
    }
  }
}
