// `tprun convert` with real ranks: each rank writes its own shard; the result equals the in-memory
// shards; a rank that fails takes the job down with exit code 2 and leaves no directory behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { LlamaForCausalLM, readSafetensors, SafetensorsFile } from 'tprun';
import { ROOT, BROWN, BROWN_META, sameBytes, tmpDir } from './helpers/h3.js';
import { must } from './helpers/must.js';
import { createRequire } from 'node:module';
import { convertThreads, readRankStats } from '../dist/bench/stats.js';

/** Whether the optional koffi (copy_file_range for convert) is installed here. */
const koffi = (() => { try { createRequire(import.meta.url)('koffi'); return true; } catch { return false; } })();

const CLI = path.join(ROOT, 'dist/cli.js');
const run = (args) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });

function assertRanksEqual(dir, tp, want) {
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', ...[...Array(tp).keys()].map((r) => `rank${r}.safetensors`)].sort());
  for (let rank = 0; rank < tp; rank++) {
    const got = readSafetensors(path.join(dir, `rank${rank}.safetensors`));
    const exp = want(rank);
    assert.deepEqual([...got.keys()], [...exp.weights.keys()]);
    for (const [n, t] of exp.weights) {
      const g = must(got.get(n), n);
      assert.deepEqual(g.shape, t.shape, n);
      assert.ok(sameBytes(g.data, t.data), `${n} rank ${rank}`);
    }
  }
}

test('HF and Meta convert at tp=2 to the same shards; tllm reshards 2 -> 4', (t) => {
  const work = tmpDir(t);
  const hf = path.join(work, 'hf2'), meta = path.join(work, 'meta2'), re = path.join(work, 're4');
  let r = run(['convert', '--model', BROWN, '--tp', '2', '--out', hf]);
  assert.equal(r.status, 0, r.stderr);
  const cfg = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.mapping, { world_size: 2, tp_size: 2, pp_size: 1 });
  assert.deepEqual(cfg.quantization, { quant_algo: null, kv_cache_quant_algo: null });
  assert.equal(cfg.rotary_base, 10000);
  assert.equal(cfg.norm_epsilon, 1e-5);
  assertRanksEqual(hf, 2, (rank) => LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 2 }, rank }));
  r = run(['convert', '--model', BROWN_META, '--format', 'meta', '--tp', '2', '--out', meta]);
  assert.equal(r.status, 0, r.stderr);
  for (let rank = 0; rank < 2; rank++) {
    const a = fs.readFileSync(path.join(hf, `rank${rank}.safetensors`));
    const b = fs.readFileSync(path.join(meta, `rank${rank}.safetensors`));
    assert.ok(a.equals(b), `Meta rank${rank}.safetensors differs from HF's`);
  }
  r = run(['convert', '--model', hf, '--tp', '4', '--out', re]);
  assert.equal(r.status, 0, r.stderr);
  assertRanksEqual(re, 4, (rank) => LlamaForCausalLM.fromHuggingFace(BROWN, { mapping: { tp_size: 4 }, rank }));
  assert.deepEqual(fs.readdirSync(work).sort(), ['hf2', 'meta2', 're4']);
});

test('a rank that fails mid-conversion: exit 2, its one-line error, no output or temp dir', (t) => {
  const work = tmpDir(t);
  const model = path.join(work, 'model');
  fs.mkdirSync(model);
  for (const f of fs.readdirSync(BROWN)) fs.copyFileSync(path.join(BROWN, f), path.join(model, f));
  // A value beyond float16 in the last row of lm_head: only rank 1 (the second half) meets it.
  const f = path.join(model, 'model-00002-of-00002.safetensors');
  const sf = SafetensorsFile.open(f);
  const info = sf.info('lm_head.weight');
  sf.close();
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, Buffer.from([0x80, 0x47]), 0, 2, info.offset + info.nbytes - 2);
  fs.closeSync(fd);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'old.txt'), 'previous run');
  fs.writeFileSync(path.join(out, 'config.json'), '{"producer": "tprun"}'); // an earlier run's: replaceable
  const r = run(['convert', '--model', model, '--tp', '2', '--dtype', 'float16', '--out', out]);
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.includes('beyond float16'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /rank 1|\[1\]|1:/);
  assert.match(lines[0], /model-00002-of-00002\.safetensors|lm_head\.weight/);
  // The old output is untouched and no temporary sibling remains.
  assert.deepEqual(fs.readdirSync(work).sort(), ['model', 'out']);
  assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'old.txt']);
});

test('convert alone writes every rank in its own process, byte-identical to ranks that join a world', (t) => {
  const work = tmpDir(t);
  const stats = (name) => {
    const d = path.join(work, `stats-${name}`);
    fs.mkdirSync(d);
    return d;
  };
  const pids = (d) => fs.readdirSync(d).sort().map((f) => JSON.parse(fs.readFileSync(path.join(d, f), 'utf8')).pid);
  const env = (d) => ({ ...process.env, TPRUN_CONVERT_STATS_DIR: d });
  // Alone: no rank processes are started (issue #14: their start-up cost more than the conversion).
  const alone = path.join(work, 'alone');
  const sa = stats('alone');
  const r = spawnSync(process.execPath, [CLI, 'convert', '--model', BROWN, '--tp', '2', '--out', alone], { encoding: 'utf8', timeout: 60_000, env: env(sa) });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(pids(sa), [r.pid, r.pid]);
  // Started as two ranks by tprun -n 2, the command joins that world: one process per rank.
  const ranks = path.join(work, 'ranks');
  const sr = stats('ranks');
  const w = spawnSync(process.execPath, [CLI, '-n', '2', '--', process.execPath, CLI, 'convert', '--model', BROWN, '--tp', '2', '--out', ranks], { encoding: 'utf8', timeout: 60_000, env: env(sr) });
  assert.equal(w.status, 0, w.stderr);
  const [p0, p1] = pids(sr);
  assert.ok(p0 !== p1 && p0 !== w.pid, `rank pids ${p0}, ${p1}`);
  for (const f of ['config.json', 'rank0.safetensors', 'rank1.safetensors']) {
    assert.ok(fs.readFileSync(path.join(alone, f)).equals(fs.readFileSync(path.join(ranks, f))), `${f} differs`);
  }
});

test('rank files written on worker threads (copied inside the kernel) equal those interleaved on one thread (read and written), tp 2 x pp 2, fewer threads than ranks', (t) => {
  const work = tmpDir(t);
  // The one-thread run also reads and writes every byte (TPRUN_KERNEL_COPY=0); the threaded one copies
  // what it can inside the kernel (copy_file_range through koffi, where that optional module is).
  const out = (threads) => {
    const dir = path.join(work, `t${threads}`);
    const stats = path.join(work, `stats${threads}`);
    fs.mkdirSync(stats);
    const r = spawnSync(process.execPath, [CLI, 'convert', '--model', BROWN, '--tp', '2', '--pp', '2', '--out', dir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, TPRUN_BUILD_THREADS: String(threads), TPRUN_CONVERT_STATS_DIR: stats, TPRUN_KERNEL_COPY: threads ? '1' : '0' } });
    assert.equal(r.status, 0, r.stderr);
    // Which thread wrote each rank's file: 0 the main thread, else a worker's id.
    const st = fs.readdirSync(stats).map((f) => JSON.parse(fs.readFileSync(path.join(stats, f), 'utf8')));
    const ids = st.map((s) => s.thread);
    assert.equal(ids.length, 4);
    if (threads === 0) assert.deepEqual(ids, [0, 0, 0, 0]);
    else assert.equal(new Set(ids.filter((id) => id > 0)).size, 4, `one worker per rank: ${ids}`);
    // The benchmarks report the threads that ran at once (3 here, for 4 ranks' workers), not the ids.
    assert.equal(convertThreads(readRankStats(stats)), threads || 1);
    const copied = st.reduce((a, s) => a + (s.bytesCopied ?? 0), 0);
    if (threads === 0) assert.equal(copied, 0);
    else if (koffi) assert.ok(copied > 0, 'bytes were copied inside the kernel');
    return dir;
  };
  const one = out(0), three = out(3);
  const files = fs.readdirSync(one).sort();
  assert.deepEqual(files, ['config.json', 'rank0.safetensors', 'rank1.safetensors', 'rank2.safetensors', 'rank3.safetensors']);
  assert.deepEqual(fs.readdirSync(three).sort(), files);
  for (const f of files) assert.ok(fs.readFileSync(path.join(one, f)).equals(fs.readFileSync(path.join(three, f))), `${f} differs`);
  // Worker threads where koffi is not installed (hidden from require: src/util/libc.ts's only way to it)
  // read and write every byte, and write the same files.
  const dir = path.join(work, 'no-koffi'), stats = path.join(work, 'stats-no-koffi');
  fs.mkdirSync(stats);
  const NO_KOFFI = path.join(ROOT, 'test/helpers/no-koffi.cjs');
  const r = spawnSync(process.execPath, [CLI, 'convert', '--model', BROWN, '--tp', '2', '--pp', '2', '--out', dir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, TPRUN_BUILD_THREADS: '3', TPRUN_CONVERT_STATS_DIR: stats, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${NO_KOFFI}` } });
  assert.equal(r.status, 0, r.stderr);
  const st = readRankStats(stats);
  assert.equal(st.reduce((a, s) => a + (s.bytesCopied ?? 0), 0), 0, 'nothing copied inside the kernel');
  assert.equal(convertThreads(st), 3);
  for (const f of files) assert.ok(fs.readFileSync(path.join(one, f)).equals(fs.readFileSync(path.join(dir, f))), `${f} differs without koffi`);
});
