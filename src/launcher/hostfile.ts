// Where ranks go: Open MPI hostfiles (`--hostfile FILE`) and the `--hosts a:2,b:2` shorthand.
// The launcher fills each host's slots in order (Open MPI's default by-slot mapping).

export interface HostSlots {
  host: string;
  slots: number;
  /** Open MPI's `max_slots`: the most ranks this host may take even when oversubscribing. */
  maxSlots?: number;
}

/** Bad placement input; the CLI prints the message (already naming file:line or the option) and exits 2. */
export class PlacementError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'PlacementError';
  }
}

// ssh destinations as Open MPI accepts them: `[user@]host`, host names, IPv4 and bracket-free IPv6.
const HOST_RE = /^(?:[A-Za-z0-9._+-]+@)?[A-Za-z0-9._:-]+$/;

function checkHost(host: string, where: string): void {
  if (!HOST_RE.test(host) || host.startsWith('-')) throw new PlacementError(`${where}: bad host name '${host}'`);
}

function positiveInt(v: string, what: string, where: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new PlacementError(`${where}: ${what} must be a positive integer, got '${v}'`);
  return Number(v);
}

/** Repeated hosts add up their slots, as in Open MPI; order of first appearance is kept. */
function merge(list: HostSlots[]): HostSlots[] {
  const byHost = new Map<string, HostSlots>();
  for (const h of list) {
    const seen = byHost.get(h.host);
    if (!seen) {
      byHost.set(h.host, { ...h });
      continue;
    }
    seen.slots += h.slots;
    if (h.maxSlots !== undefined || seen.maxSlots !== undefined) {
      seen.maxSlots = Math.max(seen.maxSlots ?? 0, h.maxSlots ?? 0) || undefined;
    }
  }
  return [...byHost.values()];
}

/**
 * Open MPI hostfile syntax: one host per line, `host [slots=N] [max_slots=M]`, `#` comments (whole line
 * or trailing), blank lines. A host without `slots` gets 1. Errors name `file:line`.
 */
export function parseHostfile(text: string, file: string): HostSlots[] {
  const out: HostSlots[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const where = `${file}:${i + 1}`;
    const line = lines[i].replace(/#.*/, '').trim();
    if (line === '') continue;
    const [host, ...attrs] = line.split(/\s+/);
    checkHost(host, where);
    const entry: HostSlots = { host, slots: 1 };
    let sawSlots = false;
    for (const attr of attrs) {
      // Open MPI also reads `slots:N` and the spellings max-slots / max_slot.
      const m = /^([A-Za-z_-]+)\s*[=:]\s*(.*)$/.exec(attr);
      if (!m) throw new PlacementError(`${where}: cannot read '${attr}' (expected slots=N or max_slots=N)`);
      const key = m[1].toLowerCase().replace(/-/g, '_');
      if (key === 'slots' || key === 'slot' || key === 'count' || key === 'cpu') {
        if (sawSlots) throw new PlacementError(`${where}: slots given twice`);
        entry.slots = positiveInt(m[2], 'slots', where);
        sawSlots = true;
      } else if (key === 'max_slots' || key === 'max_slot') {
        entry.maxSlots = positiveInt(m[2], 'max_slots', where);
      } else {
        throw new PlacementError(`${where}: unknown attribute '${m[1]}' (expected slots or max_slots)`);
      }
    }
    if (entry.maxSlots !== undefined) {
      if (!sawSlots) entry.slots = entry.maxSlots;
      if (entry.maxSlots < entry.slots) {
        throw new PlacementError(`${where}: max_slots=${entry.maxSlots} is less than slots=${entry.slots}`);
      }
    }
    out.push(entry);
  }
  if (out.length === 0) throw new PlacementError(`${file}: no hosts in hostfile`);
  return merge(out);
}

/** `--hosts a:2,b:2` (slots after the last colon, 1 when left out; `user@host` allowed). */
export function parseHostsArg(s: string): HostSlots[] {
  const out: HostSlots[] = [];
  const where = '--hosts';
  for (const raw of s.split(',')) {
    const item = raw.trim();
    if (item === '') throw new PlacementError(`${where}: empty host in '${s}'`);
    const m = /^(.*):(\d+)$/.exec(item);
    const host = m ? m[1] : item;
    checkHost(host, where);
    out.push({ host, slots: m ? positiveInt(m[2], `slots of ${host}`, where) : 1 });
  }
  return merge(out);
}

/**
 * Open MPI's by-slot mapping: rank r goes to the first host with a free slot. Returns one host index per
 * rank; more ranks than slots is an error (Open MPI refuses too, unless told to oversubscribe).
 */
export function mapBySlot(hosts: HostSlots[], n: number): number[] {
  const total = hosts.reduce((a, h) => a + h.slots, 0);
  if (n > total) {
    throw new PlacementError(`-n ${n} needs ${n} slots but the hosts give ${total} (${hosts.map((h) => `${h.host}:${h.slots}`).join(',')})`);
  }
  const out: number[] = [];
  for (let h = 0; h < hosts.length && out.length < n; h++) {
    for (let s = 0; s < hosts[h].slots && out.length < n; s++) out.push(h);
  }
  return out;
}
