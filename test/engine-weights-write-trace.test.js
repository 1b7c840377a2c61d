// The weights.write span of `--trace` says which CRC-32 ran (src/engine/weight-file.ts): where that is
// libdeflate, buffers under its threshold still go to node:zlib (src/util/fast-crc32.ts: an FFI call costs
// more than zlib's table loop there), and the span says from what size, so the label is true of every buffer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('weights.write names the CRC-32 it used and, for libdeflate, the size below which zlib took the buffers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wtrace-'));
  // Spans are recorded in this process (trace.ts's file mode) and taken back before its exit writes them.
  process.env.TPRUN_TRACE = join(dir, 'trace.json');
  t.after(() => { delete process.env.TPRUN_TRACE; rmSync(dir, { recursive: true, force: true }); });
  const { WeightFile } = await import('../dist/engine/weight-file.js');
  const { adoptLocalTrace } = await import('../dist/util/trace.js');
  const { crc32Impl, FAST_MIN } = await import('../dist/util/fast-crc32.js');
  const wf = new WeightFile('weights.bin');
  wf.add('small', new Uint8Array(100).fill(1));
  wf.add('big', new Uint8Array(1 << 20).fill(2));
  await wf.write(join(dir, 'weights.bin'), { threads: 0 });
  const spans = adoptLocalTrace().filter((e) => e.name === 'weights.write');
  assert.equal(spans.length, 1);
  const a = spans[0].args ?? {};
  assert.equal(a.crc32, crc32Impl());
  if (a.crc32 === 'libdeflate') {
    assert.equal(typeof FAST_MIN, 'number');
    assert.equal(a.crc32_zlib_below_bytes, FAST_MIN, JSON.stringify(a));
  } else {
    assert.equal(a.crc32_zlib_below_bytes, undefined, JSON.stringify(a));
  }
});
