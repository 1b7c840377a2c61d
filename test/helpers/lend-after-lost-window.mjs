// A child of test/engine-source-map.test.js: one mapped transpose leaves its window staged, then putting
// that window's pages back fails (every anonymous mmap refused) at the moment the weight writer borrows
// its ring, which must then stay below the lost pages: filling it must not hit the read-only window.
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { libcMemory } from '../../dist/util/libc.js';
import { HalfSimd, mapSources } from '../../dist/engine/half-simd.js';
import { wasmMapStats } from '../../dist/util/wasm-map.js';

const dir = mkdtempSync(join(tmpdir(), 'tprun-lend-'));
try {
  const file = join(dir, 'src.bin');
  const rows = 64, cols = 64, bytes = rows * cols * 2;
  writeFileSync(file, Buffer.alloc(bytes, 1));
  const fd = openSync(file, 'r');
  mapSources(true, 0);
  const h = HalfSimd.create(new Uint16Array(65536), new Uint16Array(65536));
  const libc = libcMemory();
  if (!h || !libc) throw new Error('wasm SIMD and koffi are needed for this check');
  const before = wasmMapStats.windows;
  h.trans('bfloat16', {}, (into) => into.fill(1), rows, cols, 0, rows, new Uint8Array(bytes), () => [{ fd, pos: 0, len: bytes, file }]);
  const mmap = libc.mmap;
  let refused = 0;
  libc.mmap = (a, n, p, f, d, o) => (d === -1 ? (refused++, null) : mmap(a, n, p, f, d, o));
  const ring = h.lendRing(1, 16384);
  libc.mmap = mmap;
  for (const b of ring ?? []) b.fill(7); // SIGSEGV here if the ring lies on the read-only window
  process.stdout.write(`${JSON.stringify({ windows: wasmMapStats.windows - before, refused, ring: ring?.length ?? 0 })}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
