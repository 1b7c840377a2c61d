// The engine manifest's damage detection: CRC-32 of every file (checksum.ts), a same-size corruption of
// weights.bin named in one line at load, and engines written before (sha256 in the manifest) still verified.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Engine } from '../dist/engine/engine.js';
import { crc32Combine } from '../dist/engine/checksum.js';
import { MODEL, tprun } from './helpers/engine.js';

let dir;
let engine;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tprun-manifest-'));
  engine = join(dir, 'engine');
  const r = await tprun(['build', '--model', MODEL, '--tp', '1', '--out', engine, '--max-input-len', '8', '--max-seq-len', '64']);
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const manifestOf = (e) => JSON.parse(readFileSync(join(e, 'rank0', 'manifest.json'), 'utf8'));
const copy = (name) => {
  const to = join(dir, name);
  cpSync(engine, to, { recursive: true });
  return to;
};
/** Inverts one byte at `pos` in place (the file keeps its size). */
function flipByte(file, pos) {
  const fd = openSync(file, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, pos);
  b[0] ^= 0xff;
  writeSync(fd, b, 0, 1, pos);
  closeSync(fd);
}

test('the manifest records size and CRC-32 of every file', () => {
  const man = manifestOf(engine);
  assert.ok(man.files['weights.bin'] && man.files['seg0.onnx']);
  for (const [file, want] of Object.entries(man.files)) {
    const bytes = readFileSync(join(engine, 'rank0', file));
    assert.equal(want.size, bytes.length, file);
    assert.equal(want.crc32, (crc32(bytes) >>> 0).toString(16).padStart(8, '0'), file);
    assert.equal(want.sha256, undefined, file);
  }
});

test('one flipped byte inside weights.bin (same size) is named at load, exit 2, one line', async () => {
  const bad = copy('flipped');
  const w = join(bad, 'rank0', 'weights.bin');
  flipByte(w, Math.floor(statSync(w).size / 2));
  await assert.rejects(Engine.fromDir(bad, 0), { message: /weights\.bin: checksum mismatch \(damaged engine\)/ });
  const r = await tprun(['generate', '--engine', bad, '--input-ids', '0,1,2', '--max-new-tokens', '2']);
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n').filter((l) => /damaged engine/.test(l));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /rank0\/weights\.bin: checksum mismatch \(damaged engine\)/);
  assert.equal(r.stdout, '');
  assert.deepEqual(r.left, []);
});

test('an engine written with sha256 in its manifest still opens, and its damage is still named', async () => {
  const old = copy('sha256');
  const man = manifestOf(old);
  for (const [file, e] of Object.entries(man.files)) {
    man.files[file] = { size: e.size, sha256: createHash('sha256').update(readFileSync(join(old, 'rank0', file))).digest('hex') };
  }
  writeFileSync(join(old, 'rank0', 'manifest.json'), JSON.stringify(man));
  const e = await Engine.fromDir(old, 0);
  assert.equal(e.segmentCount, Object.keys(man.files).filter((f) => /^seg\d+\.onnx$/.test(f)).length);
  flipByte(join(old, 'rank0', 'weights.bin'), 12345);
  await assert.rejects(Engine.fromDir(old, 0), { message: /weights\.bin: checksum mismatch \(damaged engine\)/ });
});

test('a manifest entry without a checksum is refused naming the manifest', async () => {
  const bad = copy('nosum');
  const man = manifestOf(bad);
  delete man.files['weights.bin'].crc32;
  writeFileSync(join(bad, 'rank0', 'manifest.json'), JSON.stringify(man));
  await assert.rejects(Engine.fromDir(bad, 0), { message: /manifest\.json: no checksum for weights\.bin \(damaged engine\)/ });
});

test('CRC-32 of parts joins to the CRC-32 of the whole (crc32Combine)', () => {
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 131 + (i >> 9)) & 255);
  for (const cuts of [[0, 0], [0, 1], [1, 300_000], [4096, 70_000], [299_999, 300_000], [150_000, 150_000]]) {
    const [a, b] = cuts;
    const parts = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)];
    let crc = 0;
    for (const p of parts) crc = crc32Combine(crc, crc32(p), p.length);
    assert.equal(crc, crc32(bytes) >>> 0, JSON.stringify(cuts));
  }
});

test('a weights.bin over 2 GiB is verified (it was read whole, which node refuses past 2 GiB)', async () => {
  // A sparse file: the engine's weights followed by zeros up to past 2 GiB; its CRC-32 is joined from
  // the real bytes' and a zero block's, so the test itself reads nothing of the 2 GiB.
  const big = copy('big');
  const w = join(big, 'rank0', 'weights.bin');
  const head = readFileSync(w);
  const size = 2 ** 31 + 3 * 65536;
  truncateSync(w, size);
  const ZERO = 1 << 24;
  const zeroCrc = crc32(new Uint8Array(ZERO));
  let crc = crc32(head);
  let left = size - head.length;
  for (; left >= ZERO; left -= ZERO) crc = crc32Combine(crc, zeroCrc, ZERO);
  crc = crc32Combine(crc, crc32(new Uint8Array(left)), left);
  const man = manifestOf(big);
  man.files['weights.bin'] = { size, crc32: (crc >>> 0).toString(16).padStart(8, '0') };
  writeFileSync(join(big, 'rank0', 'manifest.json'), JSON.stringify(man));
  const e = await Engine.fromDir(big, 0); // every byte read: a file cut short at 2 GiB would not match
  assert.equal(e.manifest?.files['weights.bin'].size, size);
});
