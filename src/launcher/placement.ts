// Which host each rank runs on, and the per-rank identity numbers derived from it.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseHostfile, parseHostsArg, mapBySlot, PlacementError, type HostSlots } from './hostfile.js';

export interface RankPlace {
  rank: number;
  host: string;
  /** Runs on this machine (spawned directly, no ssh). */
  local: boolean;
  nodeRank: number;
  localRank: number;
  localSize: number;
}

const LOCAL_NAMES = new Set(['localhost', '127.0.0.1', '::1']);

export function isLocalHost(host: string): boolean {
  const bare = host.replace(/^[^@]*@/, '');
  // A user@ prefix means "log in as someone else": that needs ssh even on this machine.
  if (bare !== host) return false;
  return LOCAL_NAMES.has(bare) || bare === hostname() || bare === hostname().split('.')[0];
}

/** `n` undefined: one rank locally, or every slot of the host list (as mpirun does). */
export function placeRanks(n: number | undefined, opts: { hostfile?: string; hosts?: string }): RankPlace[] {
  let hosts: HostSlots[];
  if (opts.hostfile !== undefined && opts.hosts !== undefined) {
    throw new PlacementError('--hostfile and --hosts cannot be used together');
  }
  if (opts.hostfile !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.hostfile, 'utf8');
    } catch (e) {
      throw new PlacementError(`--hostfile ${opts.hostfile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    hosts = parseHostfile(text, opts.hostfile);
  } else if (opts.hosts !== undefined) {
    hosts = parseHostsArg(opts.hosts);
  } else {
    const size = n ?? 1;
    return Array.from({ length: size }, (_, r) => ({ rank: r, host: 'localhost', local: true, nodeRank: 0, localRank: r, localSize: size }));
  }
  const hostOf = mapBySlot(hosts, n ?? hosts.reduce((a, h) => a + h.slots, 0));
  const used = [...new Set(hostOf)];
  const counts = new Map<number, number>();
  for (const h of hostOf) counts.set(h, (counts.get(h) ?? 0) + 1);
  const seen = new Map<number, number>();
  return hostOf.map((h, r) => {
    const localRank = seen.get(h) ?? 0;
    seen.set(h, localRank + 1);
    const host = hosts[h].host;
    return { rank: r, host, local: isLocalHost(host), nodeRank: used.indexOf(h), localRank, localSize: counts.get(h)! };
  });
}
