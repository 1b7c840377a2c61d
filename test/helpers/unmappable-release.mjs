// Child of test/engine-source-map.test.js: writes one shard's weight file by the read path, then with
// checkpoint windows mapped while every mmap that would put a window's pages back fails (the window
// stays mapped read-only, as after a refused mmap). Prints JSON: whether both files match, the windows
// mapped, whether a new WasmFileMap can still be made. Before release() checked its mmap, the next
// source copied into the memory was stored into the read-only window: SIGSEGV.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { libcMemory } from '../../dist/util/libc.js';
import { WasmFileMap, wasmMapStats } from '../../dist/util/wasm-map.js';
import { mapSources } from '../../dist/engine/half-simd.js';
import { engineWeight, engineWeightTransposed } from '../../dist/engine/weight-convert.js';
import { WeightFile } from '../../dist/engine/weight-file.js';
import { openLazyShard } from '../../dist/engine/lazy-shard.js';

const [model, tp, rank] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const dir = mkdtempSync(join(tmpdir(), 'tprun-unmappable-'));
async function write(name) {
  const { shard, close } = openLazyShard({ dir: model, meta: false, load: { mapping: { tp_size: tp, world_size: tp, pp_size: 1 }, rank } });
  try {
    const wf = new WeightFile('weights.bin');
    for (const [n, t] of shard.weights) wf.add(n, t.shape.length === 2 && !n.includes('embedding') ? engineWeightTransposed(t, 'float16', n) : engineWeight(t, 'float16', n));
    const crc = await wf.write(join(dir, name), { threads: 0, chunkBytes: 64 << 10 });
    return { crc, bytes: readFileSync(join(dir, name)) };
  } finally {
    close();
  }
}
try {
  mapSources(false);
  const read = await write('read.bin');
  const libc = libcMemory();
  if (!libc) throw new Error('koffi is needed for this check');
  const mmap = libc.mmap;
  let refused = 0;
  libc.mmap = (addr, n, prot, flags, fd, off) => {
    if (fd === -1) { refused++; return null; } // the anonymous pages that would replace a window
    return mmap(addr, n, prot, flags, fd, off);
  };
  mapSources(true, 0);
  const mapped = await write('mapped.bin');
  libc.mmap = mmap;
  const again = WasmFileMap.create(new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true }));
  process.stdout.write(JSON.stringify({ same: mapped.crc === read.crc && mapped.bytes.equals(read.bytes), windows: wasmMapStats.windows, refused, mapsAgain: again !== undefined }) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
