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

export interface PlacementOptions {
  hostfile?: string;
  hosts?: string;
  /** torchrun's --nproc-per-node: ranks on each host (replaces the hosts' slot counts). */
  perNode?: number;
  /** torchrun's --nnodes: how many of the listed hosts to use (the first ones). */
  nnodes?: number;
}

/**
 * `n` undefined: one rank locally (or --nproc-per-node of them), or every slot of the host list (as mpirun
 * does). torchrun's spellings map onto the same placement: --nnodes picks the first hosts of the list,
 * --nproc-per-node sets each host's slots.
 */
export function placeRanks(n: number | undefined, opts: PlacementOptions): RankPlace[] {
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
    if ((opts.nnodes ?? 1) > 1) {
      throw new PlacementError(`--nnodes ${opts.nnodes}: name the nodes with --hostfile or --host (tprun starts every node's ranks from here)`);
    }
    const size = n ?? opts.perNode ?? 1;
    return Array.from({ length: size }, (_, r) => ({ rank: r, host: 'localhost', local: true, nodeRank: 0, localRank: r, localSize: size }));
  }
  if (opts.nnodes !== undefined) {
    const from = opts.hostfile !== undefined ? `--hostfile ${opts.hostfile}` : '--host';
    if (hosts.length < opts.nnodes) throw new PlacementError(`--nnodes ${opts.nnodes}: ${from} lists only ${hosts.length} host(s)`);
    hosts = hosts.slice(0, opts.nnodes);
  }
  if (opts.perNode !== undefined) hosts = hosts.map((h) => ({ ...h, slots: opts.perNode!, maxSlots: undefined }));
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
