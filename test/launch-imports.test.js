// Launch time is CPU on a small machine (`tprun bench launch`): a plain launch and a rank that only joins
// the world and meets at a barrier must not load what they do not use. Checked by recording every
// module the launcher and the ranks resolve, not by timing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './helpers/procs.js';

const HOOK = fileURLToPath(new URL('./helpers/record-imports.mjs', import.meta.url));
const RANK = fileURLToPath(new URL('../dist/bench/launch-rank.js', import.meta.url));
const MODEL = fileURLToPath(new URL('../models/brown-llama-a', import.meta.url));

const WORLD_BUNDLE = fileURLToPath(new URL('../dist/rank/world.bundle.cjs', import.meta.url));
const LAUNCH_BUNDLE = fileURLToPath(new URL('../dist/launcher/launch.bundle.cjs', import.meta.url));
/** What a launch must never load, in the launcher or in a rank that only joins the world. */
const HEAVY = ['/node_modules/execa/', '/node_modules/yargs/', '/node_modules/onnxruntime', '/node_modules/zod/v4/', '/node_modules/msgpackr/node-index.js',
  '/node_modules/msgpackr-extract/', '/node_modules/cli-progress/', '/node_modules/koffi/', '/dist/engine/', '/dist/checkpoint/', '/dist/model/', '/dist/commands/index.js'];
/** What the launcher must not load before its ranks run: the world is theirs, ssh and the trace writer come when asked for. */
const NOT_LAUNCHER = ['/dist/rank/', '/node_modules/zeromq/', '/node_modules/zod/', '/node_modules/msgpackr/', '/dist/launcher/remote.js', '/dist/util/trace.js'];

/** The files esbuild put in a bundle: it heads each with a comment naming its path. */
function bundled(file) {
  assert.ok(existsSync(file), `${file} is missing: the build bundles it with esbuild (npm run build, scripts/bundle.mjs)`);
  const text = readFileSync(file, 'utf8');
  return { text, files: [...text.matchAll(/^\/\/ (\S+\.[cm]?js)$/gm)].map((m) => `/${m[1]}`) };
}

test('the bundles a launch runs hold the world, the launcher and their pure-JS libraries, and nothing heavy', () => {
  const world = bundled(WORLD_BUNDLE);
  for (const want of ['/dist/rank/init-world.js', '/dist/rank/peer-world.js', '/dist/rank/rendezvous.js', '/node_modules/zod/v3/', '/node_modules/msgpackr/pack.js']) {
    assert.ok(world.files.some((f) => f.includes(want)), `the world bundle lacks ${want}`);
  }
  for (const unwanted of [...HEAVY, '/node_modules/zeromq/', '/dist/launcher/']) assert.deepEqual(world.files.filter((f) => f.includes(unwanted)), [], `the world bundle holds ${unwanted}`);
  // Native addons stay packages of their own, required where they are installed.
  assert.match(world.text, /require\("zeromq"\)/);
  const launcher = bundled(LAUNCH_BUNDLE);
  for (const want of ['/dist/commands/launch.js', '/dist/launcher/launch.js', '/dist/launcher/watchdog.js', '/node_modules/yargs-parser/']) {
    assert.ok(launcher.files.some((f) => f.includes(want)), `the launcher bundle lacks ${want}`);
  }
  for (const unwanted of [...HEAVY, ...NOT_LAUNCHER]) assert.deepEqual(launcher.files.filter((f) => f.includes(unwanted)), [], `the launcher bundle holds ${unwanted}`);
});

test('a launch of barrier-only ranks loads the world from its bundle, and neither execa, yargs, onnxruntime, zod\'s v4 root nor msgpackr\'s native extractor', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    const log = join(dir, 'imports.log');
    const r = spawnSync(process.execPath, [CLI, '-n', '2', '--gpus', 'none', '--quiet', '--', process.execPath, RANK], {
      env: { ...process.env, RECORD_IMPORTS: log, NODE_OPTIONS: `--import=${HOOK}`, CUDA_VISIBLE_DEVICES: undefined, TPRUN_BUNDLE: undefined },
      encoding: 'utf8', timeout: 120000,
    });
    assert.equal(r.status, 0, r.stderr);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    const pids = new Set(lines.map((l) => l.split(' ')[0]));
    const urls = lines.map((l) => l.split(' ')[1]);
    // The recording reached the launcher and both ranks (each loads the world, and ZeroMQ through it).
    assert.ok(pids.size >= 3, `imports recorded for ${pids.size} process(es)`);
    assert.equal(urls.filter((u) => u.endsWith('/dist/rank/world.js')).length, 2);
    assert.equal(urls.filter((u) => u.endsWith('/node_modules/zeromq/lib/index.js')).length >= 2, true, 'both ranks load ZeroMQ');
    // The world's own modules and its libraries came in the bundle, not one ES module at a time.
    for (const one of ['/dist/rank/peer-world.js', '/dist/rank/rendezvous.js', '/node_modules/zod/', '/node_modules/msgpackr/']) {
      assert.deepEqual(urls.filter((u) => u.includes(one)), [], `a rank loaded ${one} as a module of its own`);
    }
    for (const unwanted of [...HEAVY, '/dist/util/trace.js']) assert.deepEqual(urls.filter((u) => u.includes(unwanted)), [], `${unwanted} was loaded`);
    assert.equal(r.stderr, '', 'a launch prints nothing of its own (no warning either)');
    // The launcher itself starts the ranks before (and without) anything of the world or its libraries:
    // what it loads is on the path to the first spawn, with the other cores idle.
    const mine = lines.filter((l) => Number(l.split(' ')[0]) === r.pid).map((l) => l.split(' ')[1]);
    assert.ok(mine.some((u) => u.endsWith('/dist/util/bundle.js')), 'the launcher was recorded');
    // The launcher came from its bundle too, not one ES module at a time.
    for (const one of ['/dist/commands/launch.js', '/dist/launcher/launch.js', '/node_modules/yargs-parser/']) {
      assert.deepEqual(mine.filter((u) => u.includes(one)), [], `the launcher loaded ${one} as a module of its own`);
    }
    for (const unwanted of [...HEAVY, ...NOT_LAUNCHER]) assert.deepEqual(mine.filter((u) => u.includes(unwanted)), [], `the launcher loaded ${unwanted}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('traced, the benchmark\'s ranks record their phases', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    const trace = join(dir, 'trace.json');
    const r = spawnSync(process.execPath, [CLI, '-n', '2', '--gpus', 'none', '--quiet', '--trace', trace, '--', process.execPath, RANK], {
      env: { ...process.env, CUDA_VISIBLE_DEVICES: undefined }, encoding: 'utf8', timeout: 120000,
    });
    assert.equal(r.status, 0, r.stderr);
    const t = JSON.parse(readFileSync(trace, 'utf8'));
    const spans = (Array.isArray(t) ? t : t.traceEvents).filter((e) => e.ph === 'X');
    for (const name of ['node start + imports', 'initWorld', 'barrier', 'close']) {
      assert.equal(new Set(spans.filter((e) => e.name === name).map((e) => e.pid)).size >= 2, true, `${name} of both ranks`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs `args` under the import recorder: { r, byPid } with the URLs each process resolved. */
function recorded(args, dir, env = {}) {
  const log = join(dir, 'imports.log');
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, RECORD_IMPORTS: log, NODE_OPTIONS: `--import=${HOOK}`, CUDA_VISIBLE_DEVICES: undefined, ...env },
    encoding: 'utf8', timeout: 120000,
  });
  /** @type {Map<number, string[]>} */
  const byPid = new Map();
  for (const l of readFileSync(log, 'utf8').trim().split('\n')) {
    const [pid, url] = l.split(' ');
    byPid.set(Number(pid), [...(byPid.get(Number(pid)) ?? []), url]);
  }
  return { r, byPid };
}

const loaded = (urls, what) => urls.filter((u) => u.includes(what));

/** The command's bundle (which holds the conversion code and yargs: scripts/bundle.mjs), or the conversion's ES module. */
const CONVERT_BUNDLE = '/dist/commands/convert.bundle.cjs';
const convertCode = (/** @type {string} */ u) => u.endsWith('/dist/checkpoint/convert.js') || u.endsWith(CONVERT_BUNDLE);

test('convert --tp 2 alone: one process, which loads no execa, zod v4 root or world (ZeroMQ)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    // The ES modules, whose imports the recorder sees one by one: the command's bundle holds yargs, zod and
    // the world inside one file, where a package loaded too early would not show (test/bundles.test.js
    // holds the bundles to the modules' behaviour).
    const { r, byPid } = recorded(['convert', '--model', MODEL, '--tp', '2', '--out', join(dir, 'ckpt')], dir, { TPRUN_BUNDLE: '0' });
    assert.equal(r.status, 0, r.stderr);
    // Both ranks' files from this one process (src/checkpoint/convert.ts convertLocal): no rank processes.
    assert.deepEqual([...byPid.keys()], [r.pid]);
    const urls = byPid.get(r.pid) ?? [];
    assert.ok(urls.some(convertCode), 'it converted');
    for (const u of ['/node_modules/execa/', '/node_modules/zod/v4/', '/node_modules/onnxruntime', '/node_modules/zeromq/', '/dist/rank/world.js']) {
      assert.deepEqual(loaded(urls, u), [], `convert loaded ${u}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a quantizing convert --tp 2 (ranks of its own): the launcher loads no execa, zod v4 root or world; its ranks load no yargs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    const out = join(dir, 'ckpt');
    const { r, byPid } = recorded(['convert', '--model', MODEL, '--tp', '2', '--quant', 'int8_wo', '--out', out], dir, { TPRUN_BUNDLE: '0' }); // as above
    assert.equal(r.status, 0, r.stderr);
    const ranks = [...byPid.keys()].filter((p) => p !== r.pid);
    const urlsOf = (/** @type {number} */ p) => byPid.get(p) ?? [];
    // Two ranks that each converted (their own world, the checkpoint reader) beside the launcher.
    assert.ok(byPid.has(r.pid), 'the launcher was recorded');
    assert.equal(ranks.filter((p) => urlsOf(p).some(convertCode)).length, 2);
    assert.ok(urlsOf(r.pid).some((u) => u.includes('/node_modules/yargs/') || u.endsWith(CONVERT_BUNDLE)), 'the launcher parses with yargs (from the command\'s bundle, or its package)');
    for (const [pid, urls] of byPid) {
      const who = pid === r.pid ? 'the launcher' : `rank process ${pid}`;
      // The launcher never joins the world it starts (no ZeroMQ); the ranks take their parsed arguments from it.
      const unwanted = ['/node_modules/execa/', '/node_modules/zod/v4/', '/node_modules/onnxruntime',
        ...(pid === r.pid ? ['/node_modules/zeromq/', '/dist/rank/world.js'] : ['/node_modules/yargs/', '/node_modules/cliui/', '/node_modules/string-width/'])];
      for (const u of unwanted) assert.deepEqual(loaded(urls, u), [], `${who} loaded ${u}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a user's rank that imports 'tprun' loads no zod v4 root, execa or yargs", () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    const log = join(dir, 'imports.log');
    // From the package's own folder, so that 'tprun' resolves to this build (the package's self-reference).
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', "await import('tprun');"], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      env: { ...process.env, RECORD_IMPORTS: log, NODE_OPTIONS: `--import=${HOOK}` },
      encoding: 'utf8', timeout: 120000,
    });
    assert.equal(r.status, 0, r.stderr);
    const urls = readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ')[1]);
    assert.ok(urls.some((u) => u.endsWith('/dist/index.js')), 'the library was loaded');
    for (const unwanted of ['/node_modules/zod/v4/', '/node_modules/execa/', '/node_modules/yargs/']) {
      assert.deepEqual(loaded(urls, unwanted), [], `${unwanted} was loaded`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a rank program that imports 'tprun/world' gets the world from its bundle and nothing of the engine", () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    const log = join(dir, 'imports.log');
    // From the package's own folder, so that 'tprun/world' resolves to this build (the package's self-reference).
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', "const { initWorld, CommError } = await import('tprun/world'); const w = await initWorld(); await w.barrier(); await w.close(); if (typeof CommError !== 'function') process.exit(3);"], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      env: { ...process.env, RECORD_IMPORTS: log, NODE_OPTIONS: `--import=${HOOK}`, TPRUN_BUNDLE: undefined },
      encoding: 'utf8', timeout: 120000,
    });
    assert.equal(r.status, 0, r.stderr);
    const urls = readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ')[1]);
    assert.ok(urls.some((u) => u.endsWith('/dist/rank/world.js')), 'the world was loaded');
    for (const unwanted of [...HEAVY, '/dist/index.js', '/dist/rank/peer-world.js']) assert.deepEqual(loaded(urls, unwanted), [], `${unwanted} was loaded`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tprun --version loads neither yargs nor any command module', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-imports-'));
  try {
    const { r, byPid } = recorded(['--version'], dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\d+\.\d+\.\d+\S*\n$/);
    const urls = [...byPid.values()].flat();
    for (const unwanted of ['/node_modules/yargs/', '/dist/commands/']) assert.deepEqual(loaded(urls, unwanted), [], `${unwanted} was loaded`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
