// Rank output through the launcher: --tag-output, whole lines, and the progress/trace side channel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTprun } from './helpers/procs.js';

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

test('--tag-output prefixes every line with its rank and never splits a line', async () => {
  // Each line is written in three pieces (three write() calls), by three ranks at once.
  const script = 'i=0; while [ $i -lt 150 ]; do printf "$TPRUN_RANK:"; printf "line-$i"; printf ":end\\n"; i=$((i+1)); done; printf "err-$TPRUN_RANK\\n" >&2';
  const r = await runTprun(['-n', '3', '--gpus', 'none', '--tag-output', '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.left, []);
  const lines = r.stdout.split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, 450);
  const seen = [0, 0, 0];
  for (const line of lines) {
    const m = /^\[(\d)\] (\d):line-(\d+):end$/.exec(line);
    assert.ok(m, `mangled line: ${JSON.stringify(line)}`);
    assert.equal(m[1], m[2]);
    // Lines of one rank keep their order.
    assert.equal(Number(m[3]), seen[m[1]]++);
  }
  assert.deepEqual(r.stderr.split('\n').filter(Boolean).sort(), ['[0] err-0', '[1] err-1', '[2] err-2']);
});

test('a line written in pieces over time stays one line; a last line without newline is kept', async () => {
  const r = await runTprun(['-n', '1', '--gpus', 'none', '--tag-output', '--', 'sh', '-c', 'printf "par"; sleep 0.3; printf "tial\\n"; printf "no newline"']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '[0] partial\n[0] no newline\n');
});

test('untagged output passes through byte for byte', async () => {
  const r = await runTprun(['--gpus', 'none', '--', 'sh', '-c', 'printf "a\\tb\\n\\nc"; printf "x" >&2']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'a\tb\n\nc');
  assert.equal(r.stderr, 'x');
});

test('progress events are cut out of stderr, shown as summary lines, and traces are merged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-trace-test-'));
  try {
    const app = join(dir, 'app.mjs');
    writeFileSync(
      app,
      `import { progress } from ${JSON.stringify(join(DIST, 'util/progress.js'))};
       import { traceSpan, traceInstant } from ${JSON.stringify(join(DIST, 'util/trace.js'))};
       const rank = Number(process.env.TPRUN_RANK);
       process.stderr.write('before-');
       const p = progress('load', 5, 'tensors');
       await traceSpan('load', async () => { for (let i = 0; i < 5; i++) { p.tick(); await new Promise((r) => setTimeout(r, 5)); } }, { rank });
       p.done();
       traceInstant('loaded');
       process.stderr.write('after\\n');
       console.log('out', rank);`,
    );
    const trace = join(dir, 'trace.json');
    const r = await runTprun(['-n', '2', '--gpus', 'none', '--trace', trace, '--', process.execPath, app]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.left, []);
    assert.ok(!r.stderr.includes('\u001e') && !r.stdout.includes('\u001e'), 'no event bytes leak into output');
    assert.equal(r.stdout.split('\n').filter(Boolean).sort().join(','), 'out 0,out 1');
    const err = r.stderr.split('\n').filter(Boolean);
    assert.equal(err.filter((l) => l === 'before-after').length, 2, r.stderr);
    for (const rank of [0, 1]) assert.ok(err.some((l) => new RegExp(`^tprun: rank ${rank}: load done \\(5 tensors, [\\d.]+s\\)$`).test(l)), r.stderr);

    const t = JSON.parse(readFileSync(trace, 'utf8'));
    assert.ok(Array.isArray(t.traceEvents));
    const spans = t.traceEvents.filter((e) => e.ph === 'X' && e.name === 'load');
    assert.deepEqual(spans.map((e) => e.pid).sort(), [0, 1]);
    for (const s of spans) {
      assert.equal(s.args.rank, s.pid);
      assert.ok(s.ts >= 0 && s.dur > 0);
    }
    assert.deepEqual(t.traceEvents.filter((e) => e.ph === 'i' && e.name === 'loaded').map((e) => e.pid).sort(), [0, 1]);
    // The launcher's view: each rank's process lifetime encloses its own spans.
    for (const s of spans) {
      const life = t.traceEvents.find((e) => e.ph === 'X' && e.name === 'process' && e.pid === s.pid);
      assert.ok(life.ts <= s.ts && life.ts + life.dur >= s.ts + s.dur);
    }
    assert.deepEqual(readdirSync(dir).sort(), ['app.mjs', 'trace.json'], 'no temporary trace file left');

    // --quiet: no summary lines, and ranks are not even asked for progress events.
    const q = await runTprun(['-n', '2', '--gpus', 'none', '--quiet', '--', process.execPath, app]);
    assert.equal(q.code, 0, q.stderr);
    assert.deepEqual(q.stderr.split('\n').filter(Boolean), ['before-after', 'before-after']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--json: the launcher speaks JSON lines on stderr', async () => {
  const r = await runTprun(['-n', '2', '--gpus', 'none', '--json', '--', 'sh', '-c', '[ "$TPRUN_RANK" = 1 ] && exit 4; sleep 300']);
  assert.equal(r.code, 4);
  const msgs = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.deepEqual(msgs[0].rank, 1);
  assert.equal(msgs[0].code, 4);
  assert.deepEqual(msgs.at(-1).tprun, 'exit');
  assert.equal(msgs.at(-1).code, 4);
  assert.deepEqual(r.left, []);
});

test('on a terminal: one progress bar per rank, rank output above the bars', async (t) => {
  // `script` (util-linux) gives the launcher a pseudo-terminal; without it there is nothing to test here.
  const { spawnSync } = await import('node:child_process');
  if (spawnSync('script', ['--version']).status !== 0) return t.skip('script(1) is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bars-test-'));
  try {
    const app = join(dir, 'app.mjs');
    writeFileSync(
      app,
      `import { progress } from ${JSON.stringify(join(DIST, 'util/progress.js'))};
       const rank = Number(process.env.TPRUN_RANK);
       const p = progress('convert', 8, 'tensors');
       for (let i = 0; i < 8; i++) { p.tick(); await new Promise((r) => setTimeout(r, 30)); }
       console.log('line from rank ' + rank);
       p.done();`,
    );
    const { CLI, newMark, markEnv, leftovers } = await import('./helpers/procs.js');
    const mark = newMark();
    const cmd = [process.execPath, CLI, '-n', '2', '--gpus', 'none', '--', process.execPath, app].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: markEnv(mark), encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    // Strip cursor movement and colours, then look at what the terminal was shown.
    const shown = r.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '\n');
    for (const rank of [0, 1]) {
      assert.match(shown, new RegExp(`rank ${rank} convert \\[[^\\]]*\\] 8/8 tensors`));
      assert.match(shown, new RegExp(`line from rank ${rank}`));
    }
    assert.ok(!shown.includes('\u001e'), 'no event bytes on the terminal');
    assert.deepEqual(await leftovers(mark), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
