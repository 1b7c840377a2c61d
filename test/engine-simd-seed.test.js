// The SIMD converter's seed kept by `npm run build` (dist/engine/half-simd.seed, scripts/simd-seed.mjs;
// src/engine/simd-seed-file.ts): it is exactly what a process makes at run time (tables and module
// bytes), a build really takes it (its trace says so: a build that silently makes the seed again fails
// here), and a seed whose modules changed since, or made by another V8, is not used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SEED_FILE, readSeedFile, writeSeedFile } from '../dist/engine/simd-seed-file.js';
import { makeSeedParts } from '../dist/engine/weight-convert.js';
import { recordInputs } from '../dist/util/bundle.js';
import { MODEL, tprun } from './helpers/engine.js';

const same = (a, b) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

test('the kept seed is what this process makes: both tables and the module, byte for byte', () => {
  const kept = readSeedFile();
  assert.ok(kept, `${SEED_FILE} missing or stale: npm run build makes it`);
  const made = makeSeedParts();
  assert.ok(made, 'this runtime has the SIMD path');
  assert.ok(same(kept.bf16, made.bf16), 'bf16 table');
  assert.ok(same(kept.f16, made.f16), 'f16 table');
  assert.ok(same(kept.wasm, made.wasm), 'module bytes');
});

test('build --model takes the kept seed (its trace says where the converter came from)', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-seed-'));
  try {
    const trace = join(dir, 'trace.json');
    const r = await tprun(['build', '--model', MODEL, '--tp', '1', '--dtype', 'float16', '--out', join(dir, 'engine'), '--quiet', '--trace', trace]);
    assert.equal(r.code, 0, r.stderr);
    const w = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.find((e) => e.ph === 'X' && e.name === 'weights.write');
    assert.equal(w.args.simd_seed, 'kept');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a seed is not used once a module it was made from changed, nor when another V8 made it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-seed-'));
  try {
    const parts = makeSeedParts();
    assert.ok(parts, 'this runtime has the SIMD path');
    const file = join(dir, 'half-simd.seed');
    const mod = join(dir, 'mod.js');
    writeFileSync(mod, 'export const a = 1;\n');
    writeSeedFile(file, parts);
    recordInputs(file, [mod]);
    assert.ok(readSeedFile(file), 'as written');
    writeFileSync(mod, 'export const a = 2;\n');
    assert.equal(readSeedFile(file), undefined, 'a module changed');
    writeFileSync(mod, 'export const a = 1;\n');
    assert.ok(readSeedFile(file), 'the module as it was');
    // Another V8's seed: its meta names that V8 (the bytes after the 12-byte header hold the JSON).
    const b = readFileSync(file);
    const v8 = Buffer.from(process.versions.v8);
    const at = b.indexOf(v8);
    assert.ok(at > 0);
    b[at] = b[at] === 0x39 ? 0x38 : 0x39;
    writeFileSync(file, b);
    recordInputs(file, [mod]);
    assert.equal(readSeedFile(file), undefined, 'another V8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
