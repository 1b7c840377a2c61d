// Monitoring figures per rank (issue 14): generate and perplexity on 2 real ranks report peak RSS, engine
// and KV-cache bytes and latency percentiles in --json, one compact line on stderr otherwise, and --trace
// carries them as counter events. Values are checked for sanity (positive, ordered), never for speed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, tprun, jsonLines } from './helpers/engine.js';
import { percentiles } from '../dist/engine/monitor.js';
import { probeWebGpu } from '../dist/engine/device.js';

let dir;
let engine;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-monitor-'));
  engine = join(dir, 'engine');
  const r = await tprun(['build', '--model', MODEL, '--tp', '2', '--out', engine, '--max-seq-len', '128', '--max-input-len', '64', '--max-batch-size', '4', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function checkMemory(ranks, weightsOf) {
  assert.deepEqual(ranks.map((r) => r.rank), [0, 1]);
  for (const r of ranks) {
    assert.ok(r.peak_rss_bytes > 10e6, `rank ${r.rank}: peak RSS ${r.peak_rss_bytes}`);
    assert.ok(r.engine_bytes.host > 0 && r.engine_bytes.host <= weightsOf(r.rank), `rank ${r.rank}: engine bytes ${JSON.stringify(r.engine_bytes)}`);
    assert.equal(r.engine_bytes.gpu, 0); // a CPU engine
    assert.equal(r.kv_cache_bytes.gpu, 0);
  }
}

test('generate --json on 2 ranks: per-rank peak RSS, engine and KV bytes, ttft and decode percentiles', async () => {
  const r = await tprun(['generate', '--engine', engine, '--input-ids', '0,5,6,7', '--input-ids', '0,9', '--max-new-tokens', '12', '--ignore-eos', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = jsonLines(r.stdout);
  assert.equal(out.length, 2);
  const weights = (rank) => statSync(join(engine, `rank${rank}`, 'weights.bin')).size;
  for (const line of out) {
    const { timings, ranks } = line;
    assert.equal(ranks.length, 2);
    checkMemory(ranks, weights);
    // brown-llama-a: 6 layers, 4 KV heads (2 per rank), head 32, float32, batch 2, capacity 4 + 12 tokens.
    for (const k of ranks) assert.equal(k.kv_cache_bytes.host, 2 * 6 * 2 * 2 * 16 * 32 * 4);
    // Whose kernels ran (an engine built for the CPU: onnxruntime's, under --kernels auto) and the KV dtype.
    for (const k of ranks) assert.deepEqual([k.kernels, k.kv_cache_dtype], ['ort', 'float32']);
    for (const k of ranks) {
      assert.ok(k.ttft_ms > 0);
      assert.equal(k.decode_ms.steps, 11); // 12 tokens: the first from the prefill, 11 decode steps
      assert.ok(k.decode_ms.p50 > 0 && k.decode_ms.p50 <= k.decode_ms.p90 && k.decode_ms.p90 <= k.decode_ms.p99, JSON.stringify(k.decode_ms));
    }
    assert.ok(timings.ttft_ms > 0 && timings.decode_ms_p50 <= timings.decode_ms_p99);
  }
  assert.deepEqual(out[0].ranks, out[1].ranks);
  assert.deepEqual(r.left, []);
});

test('generate without --json: one compact monitoring line on stderr naming both ranks; stdout is the text', async () => {
  const r = await tprun(['generate', '--engine', engine, '--input-ids', '0,5,6,7', '--max-new-tokens', '4']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('ranks '));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^ranks 0\/1 · peak RSS [\d.]+\/[\d.]+ [MG]B · engine host .* · KV host .* · ttft .* ms · decode p50\/p90\/p99 .* · kernels ort\/ort · KV float32\/float32$/);
  assert.doesNotMatch(r.stdout, /peak RSS/);
});

test('perplexity --json on 2 ranks: per-rank memory and per-batch latency percentiles', async () => {
  const r = await tprun(['perplexity', '--engine', engine, '--window', '64', '--max-tokens', '512', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [res] = jsonLines(r.stdout);
  assert.equal(res.tokens, 512);
  checkMemory(res.ranks, (rank) => statSync(join(engine, `rank${rank}`, 'weights.bin')).size);
  for (const k of res.ranks) {
    assert.equal(k.kv_cache_bytes.host, 0); // windows are scored without a cache
    assert.ok(k.first_batch_ms > 0);
    assert.equal(k.batch_ms.steps, 1); // 8 windows in batches of 4
  }
});

test('generate --trace: the trace has counter events (memory, latency, per-token) for both ranks beside the phases', async () => {
  const trace = join(dir, 'trace.json');
  const r = await tprun(['generate', '--engine', engine, '--input-ids', '0,5,6,7', '--max-new-tokens', '6', '--ignore-eos', '--quiet', '--trace', trace]);
  assert.equal(r.code, 0, r.stderr);
  const events = JSON.parse(readFileSync(trace, 'utf8')).traceEvents;
  const counters = events.filter((e) => e.ph === 'C');
  for (const pid of [0, 1]) {
    const mine = counters.filter((e) => e.pid === pid);
    const mem = mine.filter((e) => e.name === 'memory');
    assert.ok(mem.length >= 1, `rank ${pid}: no memory counter`);
    assert.ok(mem.every((e) => e.args.peak_rss_bytes > 0 && e.args.engine_host_bytes > 0));
    assert.equal(mine.filter((e) => e.name === 'token latency').length, 5);
    const lat = mine.find((e) => e.name === 'latency');
    assert.ok(lat && lat.args.ttft_ms > 0 && lat.args.decode_ms_p50 <= lat.args.decode_ms_p99, JSON.stringify(lat));
    assert.ok(events.some((e) => e.ph === 'X' && e.pid === pid && e.name === 'decode'), `rank ${pid}: no decode span`);
  }
});

test('on the WebGPU provider the weights and the KV cache are counted as GPU bytes (lavapipe in CI)', async (t) => {
  const why = await probeWebGpu();
  if (why) return t.skip(`no WebGPU adapter: ${why}`);
  const r = await tprun(['generate', '--engine', engine, '--device', 'gpu', '--input-ids', '0,5,6,7', '--max-new-tokens', '3', '--ignore-eos', '--json'], { timeoutMs: 600000 });
  assert.equal(r.code, 0, r.stderr);
  const [{ ranks }] = jsonLines(r.stdout);
  for (const k of ranks) {
    assert.equal(k.engine_bytes.host, 0);
    assert.ok(k.engine_bytes.gpu > 0 && k.engine_bytes.gpu <= statSync(join(engine, `rank${k.rank}`, 'weights.bin')).size);
    assert.deepEqual(k.kv_cache_bytes, { host: 0, gpu: 6 * 2 * 2 * 7 * 32 * 4 }); // 6 layers × K,V × 2 KV heads × (4 + 3) × 32 × 4 B
  }
});

test('percentiles are nearest-rank: measured values, null without samples', () => {
  assert.deepEqual(percentiles([]), { p50: null, p90: null, p99: null, steps: 0 });
  assert.deepEqual(percentiles([3]), { p50: 3, p90: 3, p99: 3, steps: 1 });
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 1..100 shuffled order
  assert.deepEqual(percentiles(xs), { p50: 50, p90: 90, p99: 99, steps: 100 });
  assert.deepEqual(percentiles([1, 2, 3, 10]), { p50: 2, p90: 10, p99: 10, steps: 4 });
});
