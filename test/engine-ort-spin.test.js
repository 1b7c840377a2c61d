// onnxruntime's intra-op threads do not spin by default (session.intra_op.allow_spinning 0): on shared
// cores spinning workers take time from the ones doing the work. TPRUN_ORT_SPIN=1 turns it back on. The
// runner's `load` trace span records what each rank's sessions were given.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, REF, tprun } from './helpers/engine.js';

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-spin-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

test('generate: intra-op spinning off by default, on with TPRUN_ORT_SPIN=1; same tokens either way', { timeout: 600_000 }, async () => {
  const e = join(dir, 'engine');
  const b = await tprun(['build', '--model', MODEL, '--max-seq-len', '128', '--max-input-len', '64', '--out', e, '--quiet'], { timeoutMs: 300_000 });
  assert.equal(b.code, 0, b.stderr);
  const p = REF.prompts[0];
  const run = async (name, env) => {
    const trace = join(dir, `${name}.json`);
    const r = await tprun(['generate', '--engine', e, '--input-ids', p.input_ids.join(','), '--max-new-tokens', '4', '--ignore-eos', '--threads', '2', '--json', '--trace', trace], { env, timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr);
    const loads = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((x) => x.ph === 'X' && x.name === 'load' && x.args?.threads !== undefined);
    assert.ok(loads.length > 0, 'a load span with the session options');
    return { spin: loads.map((l) => l.args.spin), ids: JSON.parse(r.stdout.trim().split('\n').filter((l) => l.startsWith('{'))[0]).new_ids };
  };
  const off = await run('default', {});
  const on = await run('spin', { TPRUN_ORT_SPIN: '1' });
  assert.deepEqual(off.spin, off.spin.map(() => false));
  assert.deepEqual(on.spin, on.spin.map(() => true));
  assert.deepEqual(off.ids, p.greedy_new_ids.slice(0, 4));
  assert.deepEqual(on.ids, off.ids);
});
