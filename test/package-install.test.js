// The package as a user gets it: `npm pack`, installed into a fresh project from the npm registry alone
// (as on a cluster whose only way out is a registry mirror: onnxruntime-node's postinstall must not fetch
// its CUDA providers from elsewhere), then used with no network at all the way the README says: a TypeScript file type-checked against the published types with skipLibCheck off,
// a 2-rank job through the installed `tprun`, and build / generate / perplexity on the shipped model and data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// A network namespace with only its loopback up: ranks still meet over 127.0.0.1, nothing else is reachable.
const canUnshare = spawnSync('unshare', ['-n', 'ip', 'link', 'set', 'lo', 'up']).status === 0;
const NO_NET = ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"'];
/** Runs argv and returns its stdout, failing the test with its stderr. */
function run(argv, opts = {}) {
  const [cmd, ...args] = argv;
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 240_000, ...opts, env: { ...process.env, NO_COLOR: '1', ...opts.env } });
  assert.equal(r.status, 0, `${argv.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout).slice(-2000)}`);
  return r.stdout;
}
/** The same with no network where the machine allows a network namespace. */
const offline = (argv, opts) => run(canUnshare ? [...NO_NET, ...argv] : argv, opts);

test('the packed tarball installs offline, type-checks, and runs a 2-rank job, build, generate and perplexity', { timeout: 600_000 }, (t) => {
  if (!canUnshare) t.diagnostic('no network namespace here (unshare -n / ip): the runs after install keep the network');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-consumer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  const packed = JSON.parse(run(['npm', 'pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT }))[0];
  const files = packed.files.map((f) => f.path);
  for (const f of ['LICENSE', 'data/brown-heldout.txt', 'data/brown-calib.txt', 'bench/generate-reference.py', 'models/brown-llama-a/config.json', 'dist/index.d.ts'])
    assert.ok(files.includes(f), `tarball lacks ${f}`);
  assert.ok(!files.some((f) => f.startsWith('models/brown-llama-a-meta/')), 'tarball ships the test-only Meta copy');
  assert.ok(!files.some((f) => f.endsWith('.map')), 'tarball ships source maps to sources it does not ship');

  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '3.1.4', private: true, type: 'module' }));
  // The README's install line. ONNXRUNTIME_NODE_INSTALL=skip keeps onnxruntime-node's postinstall from
  // fetching CUDA providers tprun never uses, on npm versions that run dependencies' install scripts.
  run(['npm', 'install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, packed.filename)], { cwd: dir, env: { ONNXRUNTIME_NODE_INSTALL: 'skip' } });
  // That postinstall, run as an npm that runs scripts would run it, leaves without touching the network.
  offline([process.execPath, 'node_modules/onnxruntime-node/script/install.js'], { cwd: dir, env: { ONNXRUNTIME_NODE_INSTALL: 'skip' } });

  writeFileSync(join(dir, 'app.ts'), [
    "import { initWorld, Engine, generate, type World } from 'tprun';",
    'const world: World = await initWorld();',
    'const x = new Float32Array([world.rank + 1, 10]);',
    "await world.allReduce(x, 'sum');",
    'if (world.rank === 0) console.log(`sum=${x[0]},${x[1]} size=${world.size}`);',
    'await world.close();',
    'export const used = [Engine, generate];',
  ].join('\n'));
  // The README's library example, verbatim (the test fails if the README's copy drifts from this one).
  const example = `import { initWorld, Engine, EngineRunner, generate, loadTokenizer } from 'tprun';

const dir = process.argv[2];            // an engine directory from \`tprun build\`
const world = await initWorld();        // one process per rank: start it with \`tprun -n <tp × pp> -- node ...\`
const engine = await Engine.fromDir(dir, world.rank, { worldSize: world.size });
const runner = await EngineRunner.load(engine, world);
const tok = loadTokenizer(dir);
const res = await generate(runner, [tok.encode('The jury said')], { maxNewTokens: 16 });
if (world.rank === 0) console.log(tok.decode(res.newIds[0], { skipSpecial: true }));
await runner.close();
await world.close();
`;
  assert.ok(readFileSync(join(ROOT, 'README.md'), 'utf8').includes(example), 'README library example differs from the tested one');
  writeFileSync(join(dir, 'gen.ts'), example);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false,
      types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')], outDir: 'out' },
    files: ['app.ts', 'gen.ts'],
  }));
  offline([process.execPath, join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: dir });

  const tprun = join(dir, 'node_modules/.bin/tprun');
  assert.match(offline([tprun, '--version'], { cwd: dir }).trim(), new RegExp(`^${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version.replace(/\./g, '\\.')}$`));
  assert.match(offline([tprun, '-n', '2', '--', process.execPath, 'out/app.js'], { cwd: dir }), /sum=3,20 size=2/);

  offline([tprun, 'build', '--model', 'node_modules/tprun/models/brown-llama-a', '--tp', '2', '--out', 'engine'], { cwd: dir });
  assert.ok(existsSync(join(dir, 'engine/config.json')));
  assert.match(offline([tprun, '-n', '2', '--', process.execPath, 'out/gen.js', 'engine'], { cwd: dir }), /\w+ \w+/);
  const gen = JSON.parse(offline([tprun, 'generate', '--engine', 'engine', '--input-ids', '0,464,533', '--max-new-tokens', '4', '--json', '-q'], { cwd: dir }));
  assert.equal(gen.new_ids.length, 4);
  const ppl = JSON.parse(offline([tprun, 'perplexity', '--engine', 'engine', '--max-tokens', '512', '--json'], { cwd: dir }));
  assert.ok(ppl.ppl > 1 && ppl.ppl < 1000, `perplexity output: ${JSON.stringify(ppl)}`);
});
