// The parallel weight-file writer (weight-jobs.ts: worker threads that each open the checkpoint, convert
// a weight or rows of one, checksum and write them at their final offsets) against the streaming writer
// on the main thread: the same bytes and the same CRC-32, whatever the job cuts and thread count, with
// weights that have no origin (in-memory, quantized) written beside the workers' ones; a job that fails
// fails the write in one line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineWeight, engineWeightTransposed } from '../dist/engine/weight-convert.js';
import { WeightFile } from '../dist/engine/weight-file.js';
import { openLazyShard } from '../dist/engine/lazy-shard.js';
import { acquireAsync, jobStats } from '../dist/engine/weight-jobs.js';
import { withPath } from '../dist/checkpoint/outdir.js';

const MODEL = new URL('../models/brown-llama-a', import.meta.url).pathname;
const META = new URL('../models/brown-llama-a-meta', import.meta.url).pathname;

/** A weight file of the shard as the engine lays it out: linears transposed, the rest plain. */
function fileOf(shard, dtype) {
  const wf = new WeightFile('weights.bin');
  for (const [name, t] of shard.weights) {
    const linear = t.shape.length === 2 && !name.includes('embedding');
    wf.add(name, linear ? engineWeightTransposed(t, dtype, name) : engineWeight(t, dtype, name));
  }
  return wf;
}

/** Adds what has no origin a worker could open: raw bytes (a quantized weight) and an in-memory tensor. */
function addLocal(wf) {
  wf.add('raw', new Uint8Array(70_001).map((_, i) => (i * 13) & 255));
  const w = new Uint16Array(40 * 24).map((_, i) => (i * 40503) & 0xffff);
  wf.add('mem', engineWeightTransposed({ dtype: 'bfloat16', shape: [40, 24], data: new Uint8Array(w.buffer) }, 'float16', 'mem'));
  // Larger than a 1 MiB chunk: the main thread makes it in several steps, the last not a whole 8 rows.
  const big = new Uint16Array(1000 * 700).map((_, i) => (i * 7919) & 0xffff);
  wf.add('mem-big', engineWeightTransposed({ dtype: 'bfloat16', shape: [1000, 700], data: new Uint8Array(big.buffer) }, 'float16', 'mem-big'));
}

const origin = (dir, tp = 1, rank = 0) => ({ dir, meta: dir === META, load: { mapping: { tp_size: tp, world_size: tp, pp_size: 1 }, rank } });
const hex = (b) => (crc32(b) >>> 0).toString(16).padStart(8, '0');

test('parallel weight writer: the streaming writer\'s bytes and CRC, any job cuts, threads, tp rank and source format', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wjobs-'));
  try {
    // Meta's format: 2-way model-parallel files merged and its rotary order undone on every worker too.
    for (const [dtype, tp, rank, model] of /** @type {const} */ ([['float16', 1, 0, MODEL], ['float32', 1, 0, MODEL], ['float16', 2, 1, MODEL], ['float16', 2, 0, META]])) {
      const { shard, close } = openLazyShard(origin(model, tp, rank));
      try {
        const serial = fileOf(shard, dtype);
        addLocal(serial);
        const ref = join(dir, 'serial.bin');
        const refSum = await serial.write(ref, { threads: 0 });
        const want = readFileSync(ref);
        assert.equal(refSum, hex(want));
        for (const opts of [{ threads: 2 }, { threads: 3, jobBytes: 64 << 10 }, { threads: 5, jobBytes: 4096, chunkBytes: 1 << 20 }]) {
          const wf = fileOf(shard, dtype);
          addLocal(wf);
          const file = join(dir, 'parallel.bin');
          const before = jobStats.jobs, seeded = jobStats.seeded;
          const sum = await wf.write(file, { ...opts, parallelMin: 0 });
          const what = `${model === META ? 'meta' : 'hf'} ${dtype} tp ${tp} rank ${rank} ${JSON.stringify(opts)}`;
          assert.ok(jobStats.jobs > before + shard.weights.size - 1, `workers wrote the weights (${what}: ${jobStats.jobs - before} jobs)`);
          // With the main thread's SIMD converter (given, not made again in every worker).
          assert.equal(jobStats.seeded - seeded, jobStats.jobs - before, `every job on a seeded converter (${what})`);
          assert.ok(readFileSync(file).equals(want), `same bytes (${what})`);
          assert.equal(sum, refSum, what);
        }
      } finally {
        close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('parallel weight writer: a worker that cannot read its weight fails the write, naming it', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wjobs-bad-'));
  try {
    const model = join(dir, 'model');
    cpSync(MODEL, model, { recursive: true });
    const { shard, close } = openLazyShard(origin(model));
    // One path whatever the cores: no pool prestarted by WeightFile.add (it would open the checkpoint
    // before it shrinks); the write's own workers open it after.
    const threads = process.env.TPRUN_BUILD_THREADS;
    process.env.TPRUN_BUILD_THREADS = '0';
    try {
      const wf = fileOf(shard, 'float16');
      // The checkpoint shrinks after the graph was planned: the workers' reads run past its end.
      const shardFile = join(model, 'model-00002-of-00002.safetensors');
      truncateSync(shardFile, 100_000);
      await assert.rejects(wf.write(join(dir, 'weights.bin'), { threads: 3, parallelMin: 0 }), (/** @type {Error} */ e) => {
        // The shrunken file by its path, and the tensor that no longer fits in it.
        assert.ok(e.message.startsWith(`${shardFile}: tensor `), e.message);
        assert.match(e.message, /: tensor [\w.]+\.weight: .*(truncated|out of range|past the end|ends at)/);
        assert.ok(!e.message.includes('\n'), 'one line');
        return true;
      });
    } finally {
      if (threads === undefined) delete process.env.TPRUN_BUILD_THREADS;
      else process.env.TPRUN_BUILD_THREADS = threads;
      close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('parallel weight writer: the main thread stops waiting for a write token held by a stuck worker once the write failed', { timeout: 30_000 }, async () => {
  // The token as a hung worker leaves it: taken, never released.
  const lock = new Int32Array(new SharedArrayBuffer(4));
  Atomics.store(lock, 0, 1);
  let failed = false;
  setTimeout(() => { failed = true; }, 50);
  // Atomics.waitAsync's timeout keeps no event loop alive (in a build, the pool's workers do).
  const alive = setInterval(() => {}, 100);
  try {
    await assert.rejects(acquireAsync(lock, () => failed), /weight file: stopped/);
  } finally {
    clearInterval(alive);
  }
  assert.equal(Atomics.load(lock, 0), 1, 'the token is not taken from its holder');
  // Free, it is taken whatever the state (the check only guards the wait).
  Atomics.store(lock, 0, 0);
  await acquireAsync(lock, () => true);
  assert.equal(Atomics.load(lock, 0), 1);
});

test('parallel weight writer: a worker\'s write error keeps its code, so the error names the weight file', { timeout: 60_000, skip: !existsSync('/dev/full') && 'no /dev/full' }, async () => {
  // /dev/full: every write fails with ENOSPC, as on a full disk. It cannot be truncated (EINVAL), so the
  // writer's sizing of the file is skipped for this test.
  const probe = await open('/dev/null');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  const truncate = proto.truncate;
  proto.truncate = async () => {};
  const { shard, close } = openLazyShard(origin(MODEL));
  try {
    // Only weights the workers write (nothing in memory): the failure is a worker's.
    const wf = fileOf(shard, 'float16');
    await assert.rejects(wf.write('/dev/full', { threads: 2, parallelMin: 0 }), (/** @type {NodeJS.ErrnoException} */ e) => {
      assert.equal(e.code, 'ENOSPC', e.message);
      // What engine.ts does with a write error of the weight file.
      assert.match(/** @type {Error} */ (withPath(e, 'rank0/weights.bin')).message, /^rank0\/weights\.bin: ENOSPC/);
      return true;
    });
  } finally {
    proto.truncate = truncate;
    close();
  }
});

test('parallel weight writer: a file that cannot be sized is closed again', { timeout: 60_000, skip: !(existsSync('/dev/full') && existsSync('/proc/self/fd')) && 'no /dev/full or /proc/self/fd' }, async () => {
  const { shard, close } = openLazyShard(origin(MODEL));
  // No pool prestarted by WeightFile.add: its workers' descriptors would blur the count.
  const threads = process.env.TPRUN_BUILD_THREADS;
  process.env.TPRUN_BUILD_THREADS = '0';
  try {
    const wf = fileOf(shard, 'float16');
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    // A character device opens for writing but cannot be truncated (EINVAL), the writer's first step.
    await assert.rejects(wf.write('/dev/full', { threads: 2, parallelMin: 0 }), /EINVAL/);
    assert.equal(fds(), before, 'no descriptor left open');
  } finally {
    if (threads === undefined) delete process.env.TPRUN_BUILD_THREADS;
    else process.env.TPRUN_BUILD_THREADS = threads;
    close();
  }
});

test('weight file: no pool is prestarted when TPRUN_BUILD_WRITER=streaming (the streaming baseline runs alone)', { timeout: 60_000 }, async () => {
  const saved = { threads: process.env.TPRUN_BUILD_THREADS, writer: process.env.TPRUN_BUILD_WRITER };
  const restore = (k, v) => { if (v === undefined) delete process.env[k]; else process.env[k] = v; };
  // A weight of a lazy shard as large as the parallel writer's threshold: its add would prestart workers.
  /** @returns {import('../dist/engine/weight-convert.js').DeferredTensor} */
  const big = (/** @type {any} */ o) => ({ dtype: 'float16', shape: [32768, 1024], byteLength: 64 << 20, fill() {}, job: { origin: o, weight: 'w', transposed: false, dtype: 'float16', splittable: true } });
  try {
    process.env.TPRUN_BUILD_THREADS = '2';
    process.env.TPRUN_BUILD_WRITER = 'streaming';
    const before = jobStats.prestarts;
    new WeightFile('weights.bin').add('w', big(origin(MODEL)));
    assert.equal(jobStats.prestarts, before, 'no pool prestarted');
    // The control: with the writer on auto, the same add prestarts one.
    process.env.TPRUN_BUILD_WRITER = 'auto';
    new WeightFile('weights.bin').add('w', big(origin(MODEL, 1, 0)));
    assert.equal(jobStats.prestarts, before + 1, 'a pool prestarted on auto');
  } finally {
    restore('TPRUN_BUILD_THREADS', saved.threads);
    restore('TPRUN_BUILD_WRITER', saved.writer);
  }
});

test('the weight writer\'s threads are this rank\'s share of the cores: divided among the local ranks that build at once, unless bound to its own slice', async () => {
  const { buildThreads } = await import('../dist/engine/weight-jobs.js');
  const world = (size) => ({ TPRUN_RANK: '0', TPRUN_WORLD_SIZE: String(size), TPRUN_LOCAL_RANK: '0', TPRUN_LOCAL_WORLD_SIZE: String(size) });
  // tp 1 on 2 cores keeps the 2 workers measured (issue #14); tp 2 and tp 8 there take none.
  assert.equal(buildThreads({}, 2, false), 2);
  assert.equal(buildThreads(world(2), 2, false), 0);
  assert.equal(buildThreads(world(8), 2, false), 0);
  assert.equal(buildThreads(world(2), 16, false), 8);
  assert.equal(buildThreads(world(4), 16, false), 4);
  assert.equal(buildThreads(world(3), 16, false), 5);
  assert.equal(buildThreads({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1', OMPI_COMM_WORLD_LOCAL_SIZE: '4' }, 16, false), 4);
  assert.equal(buildThreads({}, 64, false), 16, 'capped');
  // Bound by tprun to its slice: the cores it sees are its own already.
  assert.equal(buildThreads(world(2), 8, true), 8);
  // Asked for: taken as given, per rank.
  assert.equal(buildThreads({ ...world(8), TPRUN_BUILD_THREADS: '3' }, 2, false), 3);
});
