// A conversion thread (convert-worker.ts) stops when another rank has failed: the flag is shared memory
// the worker reads before each chunk, so it is seen even by a rank whose chunks are all copied inside the
// kernel (synchronous copies never yield to the event loop, where a message would wait).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { BROWN, tmpDir } from './helpers/h3.js';

test('convert worker: a rank stops at its next chunk once the shared stop flag is set, writing no whole file', { timeout: 120_000 }, async (t) => {
  const dir = tmpDir(t, 'tprun-cw-');
  const tmp = path.join(dir, 'out.tmp');
  fs.mkdirSync(tmp);
  const stop = new Int32Array(new SharedArrayBuffer(4));
  // Set before the worker starts: no timing decides the outcome.
  Atomics.store(stop, 0, 1);
  const w = new Worker(new URL('../dist/checkpoint/convert-worker.js', import.meta.url), { workerData: { o: { model: BROWN, out: path.join(dir, 'out'), tp: 2 }, tmp, rank: 0, stop } });
  /** @type {{ kind: string, message?: string }[]} */
  const got = [];
  w.on('message', (m) => got.push(m));
  await new Promise((resolve, reject) => { w.once('exit', resolve); w.once('error', reject); });
  const end = got.find((m) => m.kind !== 'tensor');
  assert.equal(end?.kind, 'error', `the rank stopped (got ${JSON.stringify(end)})`);
  assert.match(String(end?.message), /stopped/);
  assert.equal(got.filter((m) => m.kind === 'tensor').length, 0, 'no tensor written after the stop');
});
