// Slurm's compressed host lists (SLURM_JOB_NODELIST, SLURM_NODELIST): `node[01-03,07],gpu-a[1-2]`.
// Ranges keep their zero padding (`[08-10]` -> 08 09 10) and several bracket groups in one name
// expand as a cartesian product (`r[1-2]n[1-2]` -> r1n1 r1n2 r2n1 r2n2), the way `scontrol show
// hostnames` prints them, so rank 0's node (the rendezvous host) is the first name.

export class NodelistError extends Error {
  constructor(list: string, why: string) {
    super(`bad Slurm node list '${list}': ${why}`);
    this.name = 'NodelistError';
  }
}

/** Splits on commas that are outside brackets. */
function splitTop(s: string, whole: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '[') {
      if (depth++ > 0) throw new NodelistError(whole, `nested '[' at ${i}`);
    } else if (c === ']') {
      if (--depth < 0) throw new NodelistError(whole, `unmatched ']' at ${i}`);
    } else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw new NodelistError(whole, "unclosed '['");
  parts.push(s.slice(start));
  return parts;
}

/** Expands one bracket body `01-03,07` into its strings, padding to the width written. */
function expandRanges(body: string, whole: string): string[] {
  const out: string[] = [];
  for (const item of body.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(item.trim());
    if (!m) throw new NodelistError(whole, `bad range '${item}' in [${body}]`);
    const [, lo, hi = lo] = m;
    const a = Number(lo);
    const b = Number(hi);
    if (b < a) throw new NodelistError(whole, `descending range '${item}'`);
    if (b - a > 1_000_000) throw new NodelistError(whole, `range '${item}' too large`);
    // Slurm pads to the width of the lower bound (`[1-10]` gives 1..10, `[01-10]` gives 01..10).
    const width = lo.length;
    for (let v = a; v <= b; v++) out.push(String(v).padStart(width, '0'));
  }
  return out;
}

/** Expands one top-level host expression, possibly with several bracket groups. */
function expandOne(expr: string, whole: string): string[] {
  let results = [''];
  let i = 0;
  while (i < expr.length) {
    const open = expr.indexOf('[', i);
    const literal = open < 0 ? expr.slice(i) : expr.slice(i, open);
    results = results.map((r) => r + literal);
    if (open < 0) break;
    const close = expr.indexOf(']', open);
    const choices = expandRanges(expr.slice(open + 1, close), whole);
    const next: string[] = [];
    for (const r of results) for (const c of choices) next.push(r + c);
    results = next;
    i = close + 1;
  }
  return results;
}

/** `expandNodelist('node[01-03,07],gpu-a[1-2]')` -> node01 node02 node03 node07 gpu-a1 gpu-a2. */
export function expandNodelist(s: string): string[] {
  const text = s.trim();
  if (text === '') return [];
  const hosts: string[] = [];
  for (const part of splitTop(text, s)) {
    const p = part.trim();
    if (p === '') throw new NodelistError(s, 'empty host name');
    if (/\s/.test(p)) throw new NodelistError(s, `space inside '${p}'`);
    hosts.push(...expandOne(p, s));
  }
  return hosts;
}
