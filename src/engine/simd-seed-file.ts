// The SIMD converter's seed (weight-convert.ts: the bf16 → f16 and f16 → f16 tables and the module's
// bytes) made once, at `npm run build` (scripts/simd-seed.mjs), into dist/engine/half-simd.seed, rather
// than at the start of every build: the tables come from the reference float path run over all 65536
// patterns four times (plain and transposed, to check they agree) and the module is encoded byte by byte,
// together 175-375 ms of a fresh process's wall time on the shared 2-core machine, all of it before the
// weight workers can start (they are handed the seed), so on the critical path of `build` (issue #14).
//
// The file is used only where its own bytes hash to what the build recorded (every read) and every module
// it was made from is still byte for byte what it was (util/bundle.ts current: the record beside it), and where this process runs
// the V8 and architecture that made it (the tables are the reference path's bits as V8 computes them,
// NaN payloads included). Otherwise the seed is made as before: same bytes, slower start.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { current } from '../util/bundle.js';

/** Where the build writes the seed: beside this module in dist/engine/. */
export const SEED_FILE = fileURLToPath(new URL('./half-simd.seed', import.meta.url));

const MAGIC = 'TPRUNHS1';
const TABLE = 65536 * 2;

/** What the file holds: the two tables and the module's bytes (compiled by the reader). */
export interface SeedParts { bf16: Uint16Array; f16: Uint16Array; wasm: Uint8Array<ArrayBuffer> }

interface Meta { v8: string; arch: string; wasm: number }

/** Writes `parts` as the seed file (layout: magic, u32 meta length, meta JSON padded to 8, bf16, f16, wasm). */
export function writeSeedFile(file: string, parts: SeedParts): void {
  const meta = new TextEncoder().encode(JSON.stringify({ v8: process.versions.v8, arch: process.arch, wasm: parts.wasm.length } satisfies Meta));
  const head = Math.ceil((12 + meta.length) / 8) * 8;
  const out = new Uint8Array(head + 2 * TABLE + parts.wasm.length);
  out.set(new TextEncoder().encode(MAGIC), 0);
  new DataView(out.buffer).setUint32(8, meta.length, true);
  out.set(meta, 12);
  out.set(new Uint8Array(parts.bf16.buffer, parts.bf16.byteOffset, TABLE), head);
  out.set(new Uint8Array(parts.f16.buffer, parts.f16.byteOffset, TABLE), head + TABLE);
  out.set(parts.wasm, head + 2 * TABLE);
  writeFileSync(file, out);
}

/** The seed kept in `file`, or undefined where it is missing, stale, malformed or another V8's. */
export function readSeedFile(file = SEED_FILE): SeedParts | undefined {
  try {
    // The seed's own bytes are hashed on every read (SHA-256 against the record, ~0.3 MB: about a
    // millisecond): its tables are written into engines, so a same-size corruption whose mtime was put
    // back (touch -r, cp -p from a damaged backup) must be made again, not kept. Read once, then checked,
    // so what is checked is what is used.
    const b = readFileSync(file);
    if (!current(file, b)) return undefined;
    if (b.toString('latin1', 0, 8) !== MAGIC) return undefined;
    const metaLen = b.readUInt32LE(8);
    const meta = JSON.parse(b.toString('utf8', 12, 12 + metaLen)) as Meta;
    if (meta.v8 !== process.versions.v8 || meta.arch !== process.arch) return undefined;
    const head = Math.ceil((12 + metaLen) / 8) * 8;
    if (b.length !== head + 2 * TABLE + meta.wasm) return undefined;
    // Copies: the tables must be plain (cloneable) arrays of their own, 2-byte aligned.
    const u16 = (at: number) => new Uint16Array(new Uint8Array(b.subarray(at, at + TABLE)).buffer);
    return { bf16: u16(head), f16: u16(head + TABLE), wasm: new Uint8Array(b.subarray(head + 2 * TABLE)) };
  } catch {
    return undefined;
  }
}
