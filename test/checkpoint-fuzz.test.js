// Mutates the real header of a transformers-written shard 1000 times (seeded) and checks that opening
// and reading every tensor either works or fails with the one-line InputError naming the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile, isInputError } from 'tprun';
import { BROWN, rng, tmpDir } from './helpers/h3.js';

const SRC = path.join(BROWN, 'model-00002-of-00002.safetensors');

function splitFile() {
  const buf = fs.readFileSync(SRC);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: buf.subarray(8, 8 + n).toString('latin1'), data: buf.subarray(8 + n) };
}

const DTYPES = ['F32', 'F16', 'BF16', 'I8', 'U8', 'F8_E4M3', 'I64', 'BOOL', 'Q4', 'bf16', '', 'F64'];
const CHARS = '0123456789[]{}",:-. eE+abcdFIU\\\u00ff';

function mutate(h, r) {
  const pick = (s) => s[Math.floor(r() * s.length)];
  const fallback = (ms) => ms.length === 0;
  const at = Math.floor(r() * h.length);
  switch (Math.floor(r() * 8)) {
    case 0: return h.slice(0, at) + pick(CHARS) + h.slice(at + 1);
    case 1: return h.slice(0, at) + h.slice(at + 1 + Math.floor(r() * 8));
    case 2: return h.slice(0, at) + pick(CHARS) + h.slice(at);
    case 3: { // change a number
      const nums = [...h.matchAll(/\d+/g)];
      if (fallback(nums)) return h.slice(0, at) + pick(CHARS) + h.slice(at + 1);
      const m = pick(nums);
      const v = [0, 1, Number(m[0]) + 1, Number(m[0]) - 1, Number(m[0]) * 2, 2 ** 53, 1e9, 4096][Math.floor(r() * 8)];
      return h.slice(0, m.index) + String(v) + h.slice(m.index + m[0].length);
    }
    case 4: { // change a dtype
      const ds = [...h.matchAll(/"dtype":"([^"]*)"/g)];
      if (fallback(ds)) return h.slice(0, at) + pick(CHARS) + h.slice(at + 1);
      const m = pick(ds);
      return h.slice(0, m.index) + `"dtype":"${pick(DTYPES)}"` + h.slice(m.index + m[0].length);
    }
    case 5: { // swap two data_offsets pairs
      const os = [...h.matchAll(/"data_offsets":\[\d+,\d+\]/g)];
      if (fallback(os)) return h.slice(0, at) + pick(CHARS) + h.slice(at + 1);
      const a = pick(os), b = pick(os);
      if (a.index === b.index) return h;
      const [x, y] = a.index < b.index ? [a, b] : [b, a];
      return h.slice(0, x.index) + y[0] + h.slice(x.index + x[0].length, y.index) + x[0] + h.slice(y.index + y[0].length);
    }
    case 6: return h.slice(0, at); // truncated header text
    default: { // change a shape
      const ss = [...h.matchAll(/"shape":\[[\d,]*\]/g)];
      if (fallback(ss)) return h.slice(0, at) + pick(CHARS) + h.slice(at + 1);
      const m = pick(ss);
      const shapes = ['[]', '[0]', '[256]', '[4096,256]', '[256,4096]', '[1,1,1]', '[-1]', '[1.5]'];
      return h.slice(0, m.index) + `"shape":${pick(shapes)}` + h.slice(m.index + m[0].length);
    }
  }
}

test('1000 seeded header mutations give only clean one-line errors naming the file', (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'fuzz.safetensors');
  const { header, data } = splitFile();
  const r = rng(1234);
  const seen = new Map();
  let okCount = 0;
  for (let i = 0; i < 1000; i++) {
    let h = header;
    for (let k = 1 + Math.floor(r() * 3); k > 0; k--) h = mutate(h, r);
    const hb = Buffer.from(h, 'latin1');
    const prefix = Buffer.alloc(8);
    // Sometimes lie about the header length, or cut the data short.
    const lie = r();
    prefix.writeBigUInt64LE(lie < 0.05 ? BigInt(hb.length + data.length + 1 + Math.floor(r() * 1e6)) : lie < 0.08 ? 2n ** 63n : BigInt(hb.length));
    const cut = r() < 0.1 ? Math.floor(r() * data.length) : data.length;
    fs.writeFileSync(file, Buffer.concat([prefix, hb, data.subarray(0, cut)]));
    let f;
    try {
      f = SafetensorsFile.open(file);
      for (const [name, info] of f.tensors) {
        f.read(name);
        if (info.shape.length >= 2 && info.shape[1] >= 2) f.readCols(name, 1, info.shape[1]);
      }
      okCount++;
    } catch (e) {
      assert.ok(isInputError(e), `mutation ${i}: not a clean error: ${e?.stack ?? e}`);
      assert.ok(e.message.startsWith(file + ':'), `mutation ${i}: error does not name the file: ${e.message}`);
      assert.ok(!e.message.includes('\n'), `mutation ${i}: multi-line error`);
      const kind = e.message.slice(file.length + 2).replace(/tensor \S+: /, '').replace(/\d+/g, '#').split(/[ (]/).slice(0, 3).join(' ');
      seen.set(kind, (seen.get(kind) ?? 0) + 1);
    } finally {
      f?.close();
    }
  }
  // The mutations must really exercise the validation: many distinct failures and some survivors.
  assert.ok(seen.size >= 8, `only ${seen.size} kinds of error: ${[...seen.keys()]}`);
  assert.ok(okCount > 0 && okCount < 1000, `${okCount} files opened cleanly`);
  t.diagnostic(`${okCount} valid after mutation; errors: ${JSON.stringify(Object.fromEntries(seen))}`);
});
