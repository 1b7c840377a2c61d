// Pipeline-parallel checkpoints read back: resharding a pp checkpoint to another split (and another tp)
// and back to one rank gives the single-rank conversion bit for bit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, tprun } from './helpers/engine.js';

let dir;
before(() => { dir = mkdtempSync(join(tmpdir(), 'tprun-pp-ckpt-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

test('HF → pp 2 → (tp 2 × pp 3) → pp 1 equals HF → pp 1, byte for byte', async () => {
  /** @type {[string, string, string[]][]} */
  const steps = [
    ['pp2', MODEL, ['--pp', '2']],
    ['tp2pp3', 'pp2', ['--format', 'tllm', '--tp', '2', '--pp', '3']],
    ['back', 'tp2pp3', ['--format', 'tllm', '--tp', '1', '--pp', '1']],
    ['direct', MODEL, []],
  ];
  for (const [out, src, extra] of steps) {
    const r = await tprun(['convert', '--model', src === MODEL ? MODEL : join(dir, src), '--out', join(dir, out), ...extra]);
    assert.equal(r.code, 0, `${out}: ${r.stderr}`);
  }
  const cfg = JSON.parse(readFileSync(join(dir, 'tp2pp3', 'config.json'), 'utf8'));
  assert.deepEqual(cfg.mapping, { world_size: 6, tp_size: 2, pp_size: 3 });
  assert.ok(readFileSync(join(dir, 'back', 'rank0.safetensors')).equals(readFileSync(join(dir, 'direct', 'rank0.safetensors'))));
});
