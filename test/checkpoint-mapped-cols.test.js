// Column cuts written from a mapping of the checkpoint (mapped-cols.ts: pwritev from the mapped rows)
// give the bytes the read-and-write path gives, and `convert` takes that path where koffi is (its bytes
// count as copied inside the kernel in the ranks' stats), so a convert that silently read them again fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { ROOT, BROWN, tmpDir } from './helpers/h3.js';
import { readRankStats } from '../dist/bench/stats.js';
import { mappedColsStats, mappedColumnsAvailable, writeColumns, writeColumnsAsync } from '../dist/checkpoint/mapped-cols.js';

const koffi = (() => { try { createRequire(import.meta.url)('koffi'); return true; } catch { return false; } })();
const CLI = path.join(ROOT, 'dist/cli.js');

test('writeColumns (and its thread-pool form): runs of rows at an unaligned offset, more rows than one pwritev takes, equal a plain gather', { skip: !koffi && 'koffi is not installed' }, async (t) => {
  const dir = tmpDir(t);
  const src = path.join(dir, 'src.bin'), dst = path.join(dir, 'dst.bin'), dstAsync = path.join(dir, 'dst-async.bin');
  // 2500 rows of 1000 bytes from offset 777 (not a page), the run [100, 400) of each.
  const rows = 2500, rowBytes = 1000, colOff = 100, run = 300, at = 777;
  const bytes = new Uint8Array(at + rows * rowBytes + 123);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  fs.writeFileSync(src, bytes);
  const fdIn = fs.openSync(src, 'r'), fdOut = fs.openSync(dst, 'w'), fdAsync = fs.openSync(dstAsync, 'w');
  try {
    const a0 = mappedColsStats.asyncBytes;
    assert.equal(await writeColumnsAsync({ range: { fd: fdIn, pos: at, len: rows * rowBytes, file: src }, rowBytes, colOff, run }, fdAsync, 5, dstAsync), true);
    assert.equal(mappedColsStats.asyncBytes - a0, rows * run);
    const before = mappedColsStats.bytes;
    assert.equal(writeColumns({ range: { fd: fdIn, pos: at, len: rows * rowBytes, file: src }, rowBytes, colOff, run }, fdOut, 5, dst), true);
    assert.equal(mappedColsStats.bytes - before, rows * run);
    // A range past the file's end is not mapped (its pages would be a bus error): the caller reads.
    assert.equal(writeColumns({ range: { fd: fdIn, pos: at, len: (rows + 1) * rowBytes, file: src }, rowBytes, colOff, run }, fdOut, 5, dst), false);
  } finally {
    fs.closeSync(fdIn);
    fs.closeSync(fdOut);
    fs.closeSync(fdAsync);
  }
  const want = new Uint8Array(5 + rows * run);
  for (let r = 0; r < rows; r++) want.set(bytes.subarray(at + r * rowBytes + colOff, at + r * rowBytes + colOff + run), 5 + r * run);
  assert.ok(Buffer.from(fs.readFileSync(dst)).equals(Buffer.from(want)));
  assert.ok(Buffer.from(fs.readFileSync(dstAsync)).equals(Buffer.from(want)), 'thread-pool form');
});

test('mappedColumnsAvailable follows TPRUN_MAP_COLUMNS and TPRUN_KERNEL_COPY', () => {
  assert.equal(mappedColumnsAvailable({ TPRUN_MAP_COLUMNS: '0' }), false);
  assert.equal(mappedColumnsAvailable({ TPRUN_KERNEL_COPY: '0' }), false);
  assert.equal(mappedColumnsAvailable({}), koffi && process.platform === 'linux');
});

test('convert --tp 2: column cuts written from mappings equal those read and written, and are taken', { timeout: 120_000 }, (t) => {
  const work = tmpDir(t);
  const convert = (name, env) => {
    const dir = path.join(work, name), stats = path.join(work, `stats-${name}`);
    fs.mkdirSync(stats);
    // One thread (as on a 2-core machine): the ranks' pipelines interleave on the main thread.
    const r = spawnSync(process.execPath, [CLI, 'convert', '--model', BROWN, '--tp', '2', '--out', dir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, TPRUN_BUILD_THREADS: '0', TPRUN_CONVERT_STATS_DIR: stats, ...env } });
    assert.equal(r.status, 0, r.stderr);
    const st = readRankStats(stats);
    return { dir, copied: st.reduce((a, s) => a + (s.bytesCopied ?? 0), 0), written: st.reduce((a, s) => a + s.bytesWritten, 0) };
  };
  const mapped = convert('mapped', {}), read = convert('read', { TPRUN_MAP_COLUMNS: '0' });
  for (const f of ['config.json', 'rank0.safetensors', 'rank1.safetensors']) {
    assert.ok(fs.readFileSync(path.join(mapped.dir, f)).equals(fs.readFileSync(path.join(read.dir, f))), `${f} differs`);
  }
  if (!koffi) return;
  // brown-llama-a is bf16 throughout: with the row cuts' copy_file_range, every byte of both files.
  assert.equal(mapped.copied, mapped.written, 'every byte copied inside the kernel');
  assert.ok(read.copied < mapped.copied, `column cuts were read (${read.copied} of ${mapped.written} bytes copied)`);
});
