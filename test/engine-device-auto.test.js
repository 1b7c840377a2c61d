// `build --device auto` decides one device for the whole world with one WebGPU probe per adapter: ranks
// that would open the same adapter (same host, same binding) share the probe of the lowest of them; ranks
// bound to different adapters or on other hosts each probe their own. The launching process probes not
// at all. Probes are `device.probe` trace spans.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adapterKey, probingRanks } from '../dist/engine/device.js';
import { MODEL, tprun } from './helpers/engine.js';

test('probingRanks: the first rank of each adapter key probes', () => {
  assert.deepEqual(probingRanks(['h|default adapter', 'h|default adapter', 'h|default adapter']), [0]);
  assert.deepEqual(probingRanks(['h|10de:2335', 'h|10de:2336']), [0, 1]);
  assert.deepEqual(probingRanks(['a|default adapter', 'b|default adapter', 'a|default adapter', 'b|default adapter']), [0, 1]);
});

test('adapterKey: the host and the binding; different bindings or hosts are different adapters', () => {
  const env = (sel) => ({ MESA_VK_DEVICE_SELECT: sel });
  assert.equal(adapterKey(env('10de:2335'), 'h'), adapterKey(env('10de:2335'), 'h'));
  assert.notEqual(adapterKey(env('10de:2335'), 'h'), adapterKey(env('10de:2336'), 'h'));
  assert.notEqual(adapterKey(env('10de:2335'), 'h1'), adapterKey(env('10de:2335'), 'h2'));
  assert.match(adapterKey(env('bogus'), 'h'), /unbindable/);
});

test('build --device auto at tp 2 on one host: one probe (rank 0), one device for both ranks', { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-device-auto-'));
  try {
    const trace = join(dir, 'trace.json');
    const r = await tprun(['build', '--model', MODEL, '--tp', '2', '--device', 'auto', '--out', join(dir, 'engine'), '--max-seq-len', '128', '--max-input-len', '64', '--quiet', '--trace', trace], { timeoutMs: 600_000 });
    assert.equal(r.code, 0, r.stderr);
    const probes = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e) => e.ph === 'X' && e.name === 'device.probe');
    assert.deepEqual(probes.map((p) => p.pid), [0], 'exactly one probe, on rank 0');
    const bc = JSON.parse(readFileSync(join(dir, 'engine', 'config.json'), 'utf8')).build_config;
    assert.ok(bc.device === 'cpu' || bc.device === 'gpu', bc.device);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
