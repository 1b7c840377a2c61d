// Every rank must call the same collectives in the same order with the same arguments. Byte counts
// already catch most mistakes; these descriptors catch the rest (allReduce on one rank and broadcast on
// another, float32 against int32, sum against max, different roots), which would otherwise pass with
// wrong results. A descriptor is one 32-bit word in each piece header (spare bytes), so the check costs
// a comparison per message: kind (4 bits) | dtype (3) | op (2) | root + 1 (23).
import type { CommDType, ReduceOp } from './types.js';

const KINDS = ['', 'barrier', 'broadcast', 'allReduce', 'allGather', 'gather', 'scatter', 'reduceScatter', 'broadcastObject'] as const;
export type CollectiveKind = Exclude<(typeof KINDS)[number], ''>;
const DTYPES: (CommDType | '')[] = ['', 'float32', 'float64', 'int32', 'uint8', 'int8', 'float16', 'bfloat16'];
const OPS: (ReduceOp | '')[] = ['', 'sum', 'max', 'min'];

export function descriptor(kind: CollectiveKind, dtype?: CommDType, op?: ReduceOp, root?: number): number {
  const k = KINDS.indexOf(kind);
  const d = dtype ? DTYPES.indexOf(dtype) : 0;
  const o = op ? OPS.indexOf(op) : 0;
  const r = root === undefined ? 0 : (root + 1) % (1 << 23);
  return (k | (d << 4) | (o << 7) | (r << 9)) >>> 0;
}

function fields(x: number) {
  return { kind: KINDS[x & 15] || `kind ${x & 15}`, dtype: DTYPES[(x >>> 4) & 7], op: OPS[(x >>> 7) & 3], root: (x >>> 9) - 1 };
}

/** "allReduce(sum, float32)", "broadcast(float32, root 1)". */
export function describe(x: number): string {
  const f = fields(x);
  const args = [f.op, f.dtype, f.root >= 0 ? `root ${f.root}` : ''].filter(Boolean);
  return `${f.kind}(${args.join(', ')})`;
}

/**
 * Collective keys: a group's id (0 for the world, up to 255) above its own call sequence (22 bits), so
 * that collectives of different groups never share a key, whatever order ranks call them in.
 */
export const SEQ_BITS = 22;
export const MAX_GROUPS = 255;
export const collectiveKey = (group: number, seq: number): number => group * 2 ** SEQ_BITS + seq;

/** "#7", or "#7 in group 2": how errors name collective key `a`. */
export function keyName(a: number): string {
  // Collective 0: what the world's start runs through the collectives' own paths (./peer-world.ts, warmPaths).
  if (a === 0) return '#0 (initWorld\'s warm-up, TPRUN_SHM_WARM_CALLS)';
  const group = Math.floor(a / 2 ** SEQ_BITS);
  const seq = a % 2 ** SEQ_BITS;
  return group ? `#${seq} in group ${group}` : `#${seq}`;
}

/** The error for collective #a where rank `src` sent `theirs` and rank `me` called `mine`. */
export function mismatch(a: number, src: number, theirs: number, me: number, mine: number): string {
  const t = fields(theirs);
  const m = fields(mine);
  const diff = t.kind !== m.kind ? 'different collectives'
    : [t.dtype !== m.dtype ? `dtype ${t.dtype} vs ${m.dtype}` : '', t.op !== m.op ? `op ${t.op} vs ${m.op}` : '',
      t.root !== m.root ? `root ${t.root} vs ${m.root}` : ''].filter(Boolean).join(', ');
  return `mismatched collective ${keyName(a)}: rank ${src} called ${describe(theirs)} where rank ${me} called ${describe(mine)} (${diff})`;
}
