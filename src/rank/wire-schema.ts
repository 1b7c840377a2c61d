// The shape of every structured message the rendezvous takes off the wire. Anything may arrive on a
// listening port before authentication (and a buggy or hostile rank may send anything after it), so each
// body is checked against these schemas before a single field is used; what does not fit is refused.
// zod's v3 API, which the zod package keeps at this subpath for good (zod.dev/v4/versioning): 10 modules
// against the v4 root's ~95 (its locales included), i.e. ~15 instead of ~75 ms of CPU in every rank's
// start, where a launch of 4 ranks on 2 cores is CPU-bound (`tprun bench launch`). rendezvous.ts and
// world.ts use the same entry, so schemas pass between them.
import { z } from 'zod/v3';
import { unpack } from 'msgpackr/unpack'; // the pure-JS build (see rendezvous.ts)
import { RING_FILE_NAME } from './ring-name.js';

const bytes = (n: number) => z.custom<Uint8Array>((b) => b instanceof Uint8Array && b.length === n, { message: `expected ${n} bytes` });
const rankNo = z.number().int().min(0).max(1 << 24);

export const Nonce = bytes(32);

/** A rank's data endpoint: what ZeroMQ will be asked to connect to. */
const endpoint = z.string().max(1024).regex(/^(tcp:\/\/[^\s]+:\d{1,5}|ipc:\/\/\/[^\s]*)$/);

/** The most TPRUN_SHM_WARM_CALLS a rank takes or a peer may advertise: the warm-up holds the event loop. */
export const MAX_WARM_CALLS = 1 << 14;

const ShmInfo = z.object({
  // Only ring files in /dev/shm that tprun names (./ring-name.ts); a peer must not make us open anything else.
  path: z.string().max(255).regex(new RegExp(`^/dev/shm/${RING_FILE_NAME.source.slice(1)}`)),
  token: z.string().regex(/^[0-9a-f]{32}$/),
  slot: z.number().int().min(64).max(1 << 30),
  slots: z.number().int().min(1).max(1 << 16),
  wake: z.string().max(200).optional(),
  ar: z.object({ off: z.number().int().min(0).max(2 ** 48), step: z.number().int().min(65536).max(1 << 30), early: z.boolean().optional(),
    oneShot: z.number().int().min(0).max(2 ** 48).optional(), warm: z.number().int().min(0).max(MAX_WARM_CALLS).optional() }).optional(),
});

export const PeerInfo = z.object({
  rank: rankNo,
  host: z.string().max(255),
  hostKey: z.string().max(512),
  pid: z.number().int().min(0),
  /** The PID namespace `pid` is in (readlink /proc/self/ns/pid, `pid:[inode]`); absent off Linux. */
  pidNs: z.string().max(64).optional(),
  data: endpoint,
  /** The endpoint for peers on the same machine, where it differs from `data`. */
  dataLocal: endpoint.optional(),
  dataNonce: Nonce,
  shm: ShmInfo.optional(),
});
export type PeerInfo = z.infer<typeof PeerInfo>;

// Client to rank 0.
/** `step`: the Slurm job step the sender's derived secret came from (identity.ts), to name a mismatch. */
const step = z.string().max(64).optional();
export const Hello = z.object({ cn: Nonce, step });
export const Auth = z.object({ size: z.number().int().min(1), info: PeerInfo, cp: Nonce });
// Rank 0 to clients.
export const Chal = z.object({ sn: Nonce, sp: Nonce, step });
export const WorldTable = z.object({ peers: z.array(PeerInfo).max(1 << 20) });
export const Deny = z.object({ reason: z.string().max(4096) });

/**
 * Decodes a msgpack body and checks it: the value, or a short reason (never throws). `undefined` bodies
 * (a frame that is missing) are refused as well.
 */
export function decode<T>(schema: z.ZodType<T>, body: Buffer | undefined): { ok: true; value: T } | { ok: false; why: string } {
  if (!body) return { ok: false, why: 'no body' };
  let v: unknown;
  try {
    v = unpack(body);
  } catch {
    return { ok: false, why: 'not msgpack' };
  }
  const r = schema.safeParse(v);
  if (r.success) return { ok: true, value: r.data };
  const i = r.error.issues[0];
  return { ok: false, why: `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}` };
}
