// Checkpoint windows mapped into the SIMD converter's memory (half-simd.ts, util/wasm-map.ts) instead of
// read into it: the weight file is the same, byte for byte and CRC, as the read path writes, for plain
// and transposed weights, whole tensors and row cuts (tp 2), in one chunk or many; the mapped path is
// really the one taken (windows counted) where koffi is; a build whose ranks cannot load koffi writes
// the same engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { engineWeight, engineWeightTransposed } from '../dist/engine/weight-convert.js';
import { mapSources } from '../dist/engine/half-simd.js';
import { WeightFile } from '../dist/engine/weight-file.js';
import { openLazyShard } from '../dist/engine/lazy-shard.js';
import { wasmMapStats } from '../dist/util/wasm-map.js';
import { crc32Impl } from '../dist/util/fast-crc32.js';

const MODEL = fileURLToPath(new URL('../models/brown-llama-a', import.meta.url));
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const NO_KOFFI = fileURLToPath(new URL('./helpers/no-koffi.cjs', import.meta.url));
const koffi = (() => { try { createRequire(import.meta.url)('koffi'); return true; } catch { return false; } })();

/** The shard's weight file as the engine lays it out (linears transposed), written with these options. */
async function write(dir, name, tp, rank, opts) {
  const { shard, close } = openLazyShard({ dir: MODEL, meta: false, load: { mapping: { tp_size: tp, world_size: tp, pp_size: 1 }, rank } });
  try {
    const wf = new WeightFile('weights.bin');
    for (const [n, t] of shard.weights) {
      const linear = t.shape.length === 2 && !n.includes('embedding');
      wf.add(n, linear ? engineWeightTransposed(t, 'float16', n) : engineWeight(t, 'float16', n));
    }
    const file = join(dir, name);
    const crc = await wf.write(file, { threads: 0, ...opts });
    return { crc, bytes: readFileSync(file) };
  } finally {
    close();
  }
}

test('mapped checkpoint windows write the read path\'s bytes and CRC: plain and transposed, tp 1 and 2, one chunk or many', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-srcmap-'));
  t.after(() => { mapSources(true); rmSync(dir, { recursive: true, force: true }); });
  for (const [tp, rank] of [[1, 0], [2, 0], [2, 1]]) {
    for (const chunkBytes of [undefined, 64 << 10]) {
      const what = `tp ${tp} rank ${rank}, chunk ${chunkBytes ?? 'default'}`;
      mapSources(false);
      const read = await write(dir, 'read.bin', tp, rank, { chunkBytes });
      // Every source worth a window mapped (no size floor), so the small model's tensors all go that way.
      mapSources(true, 0);
      const before = { ...wasmMapStats };
      const mapped = await write(dir, 'mapped.bin', tp, rank, { chunkBytes });
      assert.equal(mapped.crc, read.crc, what);
      assert.ok(mapped.bytes.equals(read.bytes), `${what}: bytes differ`);
      // Fails if the mapping is silently not taken (koffi is installed here).
      if (koffi) {
        assert.ok(wasmMapStats.windows > before.windows, `${what}: no window was mapped`);
        // Everything but the fused qkv (three tensors apart in the file) and the column cuts of tp 2.
        assert.ok(wasmMapStats.bytes - before.bytes >= read.bytes.length / 3, `${what}: ${wasmMapStats.bytes - before.bytes} bytes mapped of ${read.bytes.length}`);
      }
    }
  }
});

test('a window whose pages cannot be put back is never written into: mapping stops and sources are read, same bytes', { timeout: 120_000, skip: !koffi && 'koffi is not installed' }, () => {
  const helper = fileURLToPath(new URL('./helpers/unmappable-release.mjs', import.meta.url));
  for (const [tp, rank] of [[1, 0], [2, 1]]) {
    const r = spawnSync(process.execPath, [helper, MODEL, String(tp), String(rank)], { encoding: 'utf8', timeout: 100_000 });
    assert.equal(r.status, 0, `tp ${tp} rank ${rank}: exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
    const out = JSON.parse(r.stdout);
    assert.ok(out.windows >= 1 && out.refused >= 1, `tp ${tp} rank ${rank}: a window was mapped and its release refused: ${r.stdout}`);
    assert.ok(out.same, `tp ${tp} rank ${rank}: bytes or CRC differ from the read path`);
    assert.equal(out.mapsAgain, false, 'mapping is off in that thread after a failed release');
  }
});

test('a ring lent while a staged window\'s pages cannot be put back stays clear of that window', { timeout: 60_000, skip: !koffi && 'koffi is not installed' }, () => {
  const helper = fileURLToPath(new URL('./helpers/lend-after-lost-window.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [helper], { encoding: 'utf8', timeout: 50_000 });
  assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
  const out = JSON.parse(r.stdout);
  assert.ok(out.windows >= 1 && out.refused >= 1, `a window was mapped and its release refused: ${r.stdout}`);
});

test('build --model with koffi hidden from the ranks (no mapping, no libdeflate: read and zlib) writes the same engine', { timeout: 240_000 }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-srcmap-build-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Each rank's weights.write span says which paths it took (weight-file.ts): windows mapped, CRC-32 used.
  const build = (out, env) => {
    const trace = join(dir, `${out}.trace.json`);
    const r = spawnSync(process.execPath, [CLI, 'build', '--model', MODEL, '--tp', '2', '--dtype', 'float16', '--out', join(dir, out), '--quiet', '--trace', trace], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
    assert.equal(r.status, 0, r.stderr);
    const writes = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e) => e.ph === 'X' && e.name === 'weights.write');
    assert.equal(writes.length, 2, `${out}: one weights.write span per rank`);
    return writes.map((e) => e.args);
  };
  const env = { TPRUN_MAP_SOURCE: undefined, TPRUN_FAST_CRC: undefined };
  const withKoffi = build('with', env);
  const without = build('without', { ...env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${NO_KOFFI}` });
  for (const f of ['rank0/weights.bin', 'rank1/weights.bin', 'rank0/manifest.json', 'rank1/manifest.json']) {
    assert.ok(readFileSync(join(dir, 'with', f)).equals(readFileSync(join(dir, 'without', f))), `${f} differs`);
  }
  // The paths each took: fails if mapping or libdeflate is silently off where this machine has them.
  if (koffi) {
    assert.ok(withKoffi.reduce((n, a) => n + a.mapped_windows, 0) >= 1, `with koffi: no window mapped (${JSON.stringify(withKoffi)})`);
    assert.ok(withKoffi.every((a) => a.crc32 === crc32Impl()), `with koffi: CRC-32 by ${withKoffi.map((a) => a.crc32)}, this machine has ${crc32Impl()}`);
  }
  for (const a of without) {
    assert.equal(a.mapped_windows, 0, 'without koffi: nothing mapped');
    assert.equal(a.crc32, 'zlib', 'without koffi: node:zlib\'s CRC-32');
  }
});

test('a checkpoint that shrank after it was opened is named in one line, not mapped past its end (a bus error)', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-srcmap-short-'));
  t.after(() => { mapSources(true); rmSync(dir, { recursive: true, force: true }); });
  const model = join(dir, 'model');
  cpSync(MODEL, model, { recursive: true });
  mapSources(true, 0);
  const { shard, close } = openLazyShard({ dir: model, meta: false, load: { mapping: { tp_size: 1, world_size: 1, pp_size: 1 }, rank: 0 } });
  try {
    const wf = new WeightFile('weights.bin');
    for (const [n, w] of shard.weights) wf.add(n, w.shape.length === 2 && !n.includes('embedding') ? engineWeightTransposed(w, 'float16', n) : engineWeight(w, 'float16', n));
    const shardFile = join(model, 'model-00002-of-00002.safetensors');
    truncateSync(shardFile, 100_000);
    await assert.rejects(wf.write(join(dir, 'weights.bin'), { threads: 0 }), (/** @type {Error} */ e) => {
      assert.match(e.message, /truncated|past the end|ended/, e.message);
      assert.ok(e.message.includes(shardFile), e.message);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    });
  } finally {
    close();
  }
});
