// convert's kernel copies and column cuts on libuv's thread pool (kernel-copy.ts copyRangeAsync, mapped-cols.ts
// writeColumnsAsync, taken by writeRankFile):
// two ranks' files written interleaved on one thread, as convertLocal does on a small machine, are the
// files the synchronous copies write (TPRUN_COPY_ASYNC=0), and the asynchronous path is the one taken
// where koffi is, so a convert that silently copies on its own thread again fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { BROWN, tmpDir } from './helpers/h3.js';
import { openSource, rankWork, writeRankFile } from '../dist/checkpoint/convert.js';
import { kernelCopyStats } from '../dist/checkpoint/kernel-copy.js';
import { mappedColsStats } from '../dist/checkpoint/mapped-cols.js';

const koffi = (() => { try { createRequire(import.meta.url)('koffi'); return true; } catch { return false; } })();

/** Both ranks of tp 2 into `dir`, their pipelines interleaved on this thread; bytes read per rank. */
async function convertBoth(dir) {
  const o = { model: BROWN, out: dir, tp: 2 };
  const { config, source } = openSource(o);
  try {
    const read = [0, 0];
    await Promise.all([0, 1].map((rank) => writeRankFile(dir, rankWork(source, config, rank), { onTensor: () => {}, onRead: (n) => { read[rank] += n; } })));
    return read;
  } finally {
    source.close();
  }
}

test('kernel copies on the thread pool write the synchronous copies\' files, and are taken', { timeout: 120_000 }, async (t) => {
  const work = tmpDir(t);
  const saved = process.env.TPRUN_COPY_ASYNC;
  t.after(() => { if (saved === undefined) delete process.env.TPRUN_COPY_ASYNC; else process.env.TPRUN_COPY_ASYNC = saved; });
  process.env.TPRUN_COPY_ASYNC = '0';
  const syncDir = path.join(work, 'sync');
  const a0 = kernelCopyStats.asyncBytes, c0 = mappedColsStats.asyncBytes;
  const syncRead = await convertBoth(syncDir);
  assert.equal(kernelCopyStats.asyncBytes, a0, 'TPRUN_COPY_ASYNC=0 copies synchronously');
  assert.equal(mappedColsStats.asyncBytes, c0, 'TPRUN_COPY_ASYNC=0 writes column cuts synchronously');
  delete process.env.TPRUN_COPY_ASYNC;
  const asyncDir = path.join(work, 'async');
  const asyncRead = await convertBoth(asyncDir);
  if (koffi) {
    assert.ok(kernelCopyStats.asyncBytes > a0, 'no copy ran on the thread pool');
    assert.ok(mappedColsStats.asyncBytes > c0, 'no column cut was written on the thread pool');
  }
  // Each rank's bytes read are counted as the synchronous path counts them.
  assert.deepEqual(asyncRead, syncRead);
  for (const f of ['rank0.safetensors', 'rank1.safetensors']) {
    assert.ok(fs.readFileSync(path.join(syncDir, f)).equals(fs.readFileSync(path.join(asyncDir, f))), `${f} differs`);
  }
});
