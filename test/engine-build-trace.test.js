// `build --model --tp 1 --trace FILE` writes the trace (it used to write nothing at tp = 1: no launcher
// to merge spans), with the phases and the weight file's own span; an unwritable trace directory is one
// line and exit 2 before anything is built.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, tprun } from './helpers/engine.js';

test('build --model --tp 1 --trace writes a Chrome trace of load, build, save and the weight file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-build-trace-'));
  try {
    const trace = join(dir, 'trace.json');
    const r = await tprun(['build', '--model', MODEL, '--tp', '1', '--dtype', 'float16', '--out', join(dir, 'engine'), '--quiet', '--trace', trace]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(trace), 'no trace file written');
    const spans = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e) => e.ph === 'X');
    for (const name of ['load', 'build', 'save', 'weights.write']) assert.ok(spans.some((e) => e.name === name), `no ${name} span`);
    const w = spans.find((e) => e.name === 'weights.write');
    assert.ok(w.args.bytes > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('build --trace into a missing directory: one line, exit 2, no engine', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-build-trace-'));
  try {
    const r = await tprun(['build', '--model', MODEL, '--tp', '1', '--out', join(dir, 'engine'), '--quiet', '--trace', join(dir, 'nope', 'trace.json')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--trace .*nope.*does not exist or is not writable/);
    assert.ok(!existsSync(join(dir, 'engine')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
