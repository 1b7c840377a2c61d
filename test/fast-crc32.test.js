// CRC-32 through libdeflate (src/util/fast-crc32.ts) gives node:zlib's values to the bit, whatever the
// length, offset, memory kind or chaining; the fast path is the one taken where koffi and libdeflate are
// both present (a silent fallback to the table loop would cost a build 16 % of its CPU), and without
// koffi or with TPRUN_FAST_CRC=0 the values come from node:zlib.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomFillSync } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { crc32, crc32Impl } from '../dist/util/fast-crc32.js';

const NO_KOFFI = fileURLToPath(new URL('./helpers/no-koffi.cjs', import.meta.url));
const MODULE = new URL('../dist/util/fast-crc32.js', import.meta.url).href;

/** Whether this machine can take the fast path at all: koffi installed and libdeflate.so.0 loadable. */
const fastHere = (() => {
  try {
    createRequire(import.meta.url)('koffi').load('libdeflate.so.0');
    return true;
  } catch {
    return false;
  }
})();

test('crc32 equals node:zlib crc32: lengths around the FFI threshold, odd offsets, shared memory, chained', () => {
  const big = randomFillSync(new Uint8Array((1 << 20) + 4099));
  const shared = new Uint8Array(new SharedArrayBuffer(big.length));
  shared.set(big);
  for (const len of [0, 1, 7, 4095, 4096, 4097, 65_537, 1 << 20, big.length - 3]) {
    for (const off of [0, 1, 3]) {
      for (const buf of [big, shared]) {
        const v = buf.subarray(off, off + len);
        assert.equal(crc32(v), zlibCrc32(v), `len ${len} off ${off}`);
        assert.equal(crc32(v, 0xdeadbeef), zlibCrc32(v, 0xdeadbeef), `chained, len ${len} off ${off}`);
      }
    }
  }
  // Pieces chained give the whole's value, across the threshold.
  let c = 0;
  for (let at = 0; at < big.length; at += 5000) c = crc32(big.subarray(at, Math.min(big.length, at + 5000)), c);
  assert.equal(c, zlibCrc32(big));
});

test('the libdeflate path is taken where koffi and libdeflate are here; without koffi or with TPRUN_FAST_CRC=0, node:zlib with the same values', { skip: !fastHere && 'no koffi or no libdeflate.so.0 on this machine' }, () => {
  assert.equal(crc32Impl(), 'libdeflate');
  const probe = `import(${JSON.stringify(MODULE)}).then((m) => { const b = new Uint8Array(1 << 16).map((_, i) => (i * 7) & 255); console.log(JSON.stringify([m.crc32Impl(), m.crc32(b)])); })`;
  const b = new Uint8Array(1 << 16).map((_, i) => (i * 7) & 255);
  for (const env of [{ NODE_OPTIONS: `--require ${NO_KOFFI}` }, { TPRUN_FAST_CRC: '0' }]) {
    const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), ['zlib', zlibCrc32(b)], JSON.stringify(env));
  }
});

test('a thread does not load koffi for buffers under LOAD_MIN (zlib\'s values), and does from it where libdeflate is', () => {
  // A fresh process: whether koffi's binary is mapped after each call (libc.ts may dlopen it without require,
  // so require's cache would not show it).
  const code = `
    const loaded = () => require('node:fs').readFileSync('/proc/self/maps', 'utf8').includes('koffi');
    import(${JSON.stringify(MODULE)}).then(({ crc32, crcStats, LOAD_MIN }) => {
      const zlib = require('node:zlib');
      const small = new Uint8Array(64 << 10).fill(7), big = new Uint8Array(LOAD_MIN).fill(9);
      const a = crc32(small) === zlib.crc32(small), afterSmall = loaded(), zlibFrom = crcStats.zlibFrom;
      const b = crc32(big) === zlib.crc32(big);
      console.log(JSON.stringify({ a, b, afterSmall, zlibFrom, afterBig: loaded(), fast: crcStats.fast }));
    });`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout);
  assert.ok(o.a && o.b, 'zlib\'s values');
  assert.equal(o.afterSmall, false, 'koffi loaded for a 64 KiB buffer');
  assert.equal(o.zlibFrom, 1);
  if (fastHere) assert.ok(o.afterBig && o.fast === 1, JSON.stringify(o));
});
