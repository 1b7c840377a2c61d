// The SIMD converter's seed kept by `npm run build` (dist/engine/half-simd.seed, scripts/simd-seed.mjs;
// src/engine/simd-seed-file.ts): it is exactly what a process makes at run time (tables and module
// bytes), a build really takes it (its trace says so: a build that silently makes the seed again fails
// here), and a seed whose modules changed since, or made by another V8, is not used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SEED_FILE, readSeedFile, writeSeedFile } from '../dist/engine/simd-seed-file.js';
import { makeSeedParts } from '../dist/engine/weight-convert.js';
import { recordInputs, staleness } from '../dist/util/bundle.js';
import { MODEL, tprun } from './helpers/engine.js';

const same = (a, b) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** The seed `npm run build` kept; a failure says how to make it again (`npx tsc` alone leaves it stale). */
function keptSeed() {
  const kept = readSeedFile();
  if (!kept) {
    const why = staleness(SEED_FILE) ?? 'not a seed this process can use';
    assert.fail(`${SEED_FILE} is not usable (${why}): run \`npm run build\` (or \`node scripts/simd-seed.mjs\` after \`npx tsc\`) before this test`);
  }
  return kept;
}

test('the kept seed is what this process makes: both tables and the module, byte for byte', () => {
  const kept = keptSeed();
  const made = makeSeedParts();
  assert.ok(made, 'this runtime has the SIMD path');
  assert.ok(same(kept.bf16, made.bf16), 'bf16 table');
  assert.ok(same(kept.f16, made.f16), 'f16 table');
  assert.ok(same(kept.wasm, made.wasm), 'module bytes');
});

test('build --model takes the kept seed (its trace says where the converter came from)', { timeout: 120_000 }, async () => {
  keptSeed();
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

/** Overwrites every entry of both tables with 0x3c00 (1.0), same size, and puts the file's times back as
 *  they were: what `touch -r` / `cp -p` of a damaged backup leaves. */
function corruptKeepingTimes(file) {
  const st = statSync(file);
  const ref = `${file}.times`;
  // touch -r copies the times to the nanosecond (utimes from JS numbers rounds them, and is then hashed).
  assert.equal(spawnSync('touch', ['-r', file, ref]).status, 0);
  const b = readFileSync(file);
  const head = Math.ceil((12 + b.readUInt32LE(8)) / 8) * 8;
  for (let i = head; i < head + 4 * 65536; i += 2) b.writeUInt16LE(0x3c00, i);
  writeFileSync(file, b);
  assert.equal(spawnSync('touch', ['-r', ref, file]).status, 0);
  rmSync(ref);
  assert.equal(statSync(file).mtimeMs, st.mtimeMs, 'mtime restored');
  assert.equal(statSync(file).size, st.size);
}

test('a seed corrupted in place with its mtime put back is not used (its own bytes are hashed on every read)', () => {
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
    corruptKeepingTimes(file);
    assert.equal(readSeedFile(file), undefined, 'same size, same mtime, other bytes');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('build from a copy of dist/ whose seed was corrupted (mtime restored) makes the seed and writes the right bytes', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-seed-'));
  const root = fileURLToPath(new URL('..', import.meta.url));
  try {
    const copy = join(dir, 'copy');
    mkdirSync(copy);
    // cp -p: a copy that keeps times exactly, so the modules pass by the mtime shortcut as in dist/ itself.
    assert.equal(spawnSync('cp', ['-rp', join(root, 'dist'), join(copy, 'dist')]).status, 0);
    cpSync(join(root, 'package.json'), join(copy, 'package.json'));
    symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'));
    corruptKeepingTimes(join(copy, 'dist', 'engine', 'half-simd.seed'));
    const build = (cli, name) => {
      const out = join(dir, name);
      const trace = join(dir, `${name}.trace.json`);
      const r = spawnSync(process.execPath, [cli, 'build', '--model', MODEL, '--tp', '1', '--dtype', 'float16', '--out', out, '--quiet', '--trace', trace], { encoding: 'utf8', env: { ...process.env, TPRUN_QUIET: '1' } });
      assert.equal(r.status, 0, r.stderr);
      const w = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.find((e) => e.ph === 'X' && e.name === 'weights.write');
      const h = createHash('sha256');
      for (const f of readdirSync(join(out, 'rank0')).sort()) h.update(f).update(readFileSync(join(out, 'rank0', f)));
      return { origin: w.args.simd_seed, hash: h.digest('hex') };
    };
    const good = build(join(root, 'dist', 'cli.js'), 'good');
    const bad = build(join(copy, 'dist', 'cli.js'), 'bad');
    assert.equal(good.origin, 'kept');
    assert.equal(bad.origin, 'made', 'the corrupted seed must not be kept');
    assert.equal(bad.hash, good.hash, 'engine bytes as from the intact seed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
