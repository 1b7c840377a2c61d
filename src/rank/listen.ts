// Where a rank's sockets listen. A job whose ranks all run on this machine listens on the loopback
// interface only (or on ipc sockets): nobody on the network can even reach its ports. A job that spans
// machines listens on the interface its peers reach it through, and on every interface only when that
// address is not one of ours (NAT, an alias, a name we cannot resolve).
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Env } from './identity.js';
import type { Rendezvous } from './identity.js';
import { expandNodelist } from './slurm-nodelist.js';

/**
 * True only when the launcher says outright that every rank runs here (its local size equals the world
 * size): tprun's TPRUN_LOCAL_WORLD_SIZE, Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE, Slurm's step node count
 * or node list, PMI's MPI_LOCALNRANKS. A guess (a missing variable) is not enough: binding the loopback
 * in a job that does span machines would cut the other machines off.
 */
export function ranksAllLocal(source: string, env: Env): boolean {
  const eq = (a?: string, b?: string) => !!a && !!b && a.trim() === b.trim();
  switch (source) {
    case 'tprun': return eq(env.TPRUN_LOCAL_WORLD_SIZE, env.TPRUN_WORLD_SIZE);
    case 'openmpi': return eq(env.OMPI_COMM_WORLD_LOCAL_SIZE, env.OMPI_COMM_WORLD_SIZE);
    case 'slurm': {
      const n = env.SLURM_STEP_NUM_NODES ?? env.SLURM_NNODES ?? env.SLURM_JOB_NUM_NODES;
      if (n) return n.trim() === '1';
      const list = env.SLURM_STEP_NODELIST ?? env.SLURM_JOB_NODELIST;
      try { return !!list && expandNodelist(list).length === 1; } catch { return false; }
    }
    case 'pmi': return eq(env.MPI_LOCALNRANKS, env.PMI_SIZE);
    default: return false;
  }
}

const isLoopback = (ip: string) => ip === '::1' || ip.startsWith('127.') || ip === 'localhost';

/** The address of one of this machine's (non-loopback) interfaces that `host` names, if any. */
export async function ownInterfaceAddress(host: string): Promise<string | undefined> {
  const h = host.replace(/^\[|\]$/g, '');
  let ip = isIP(h) ? h : undefined;
  if (!ip) {
    // node:dns loaded only for a host name: a local job names rank 0 by IP (launch time, `tprun bench launch`).
    try { ip = (await (await import('node:dns/promises')).lookup(h)).address; } catch { return undefined; }
  }
  if (isLoopback(ip)) return undefined;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.address === ip) return ip;
  }
  return undefined;
}

const bracket = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);
const wildcard = (likeHost?: string) => (likeHost?.includes(':') ? '[::]' : '*');

/** The rendezvous endpoints with the listening address narrowed as far as the job allows. */
export async function narrowRendezvous(rdv: Rendezvous, local: boolean): Promise<Rendezvous> {
  const m = /^tcp:\/\/(.*):(\d+)$/.exec(rdv.bind);
  if (!m) return rdv; // ipc: private to this machine and user already
  const port = m[2];
  if (local) {
    const lo = rdv.masterHost?.replace(/^\[|\]$/g, '') === '::1' ? '[::1]' : '127.0.0.1';
    return { ...rdv, bind: `tcp://${lo}:${port}`, connect: `tcp://${lo}:${port}`, masterHost: lo.replace(/^\[|\]$/g, '') };
  }
  const own = rdv.masterHost ? await ownInterfaceAddress(rdv.masterHost) : undefined;
  return { ...rdv, bind: `tcp://${own ? bracket(own) : wildcard(rdv.masterHost)}:${port}` };
}

/**
 * Binds a rank's data socket (through `bind`, which returns the bound endpoint) and says what to tell
 * the peers: `data` for everyone, `dataLocal` for peers on this machine when it differs. Next to an ipc
 * rendezvous it is an ipc socket too; over TCP it listens on the loopback for a local job, else on the
 * interface of the advertised host when that is ours, else everywhere (peers here then use the loopback).
 */
export async function listenForData(bind: (ep: string) => Promise<string>, rdv: Rendezvous, rank: number, local: boolean,
  advertiseHost: () => Promise<string>): Promise<{ data: string; dataLocal?: string }> {
  if (rdv.bind.startsWith('ipc://')) return { data: await bind(rdv.bind.replace(/\.sock$/, `-${rank}.sock`)) };
  if (local) {
    const lo = rdv.masterHost === '::1' ? '[::1]' : '127.0.0.1';
    return { data: await bind(`tcp://${lo}:0`) };
  }
  const host = await advertiseHost();
  const own = await ownInterfaceAddress(host);
  const port = (await bind(`tcp://${own ? bracket(own) : wildcard(host)}:0`)).replace(/^.*:/, '');
  return { data: `tcp://${host}:${port}`, dataLocal: own ? undefined : `tcp://127.0.0.1:${port}` };
}
