// Issue #11 item 2 (library side): the SIGINT / SIGTERM handlers that remove a half-written output
// exist only while a write is under way. Afterwards the application's own handlers (or the default
// action) decide, as before the save; during the write a signal removes the temp and then acts as usual.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateCheckpoint, LlamaForCausalLM, build } from 'tprun';

const DIST = path.resolve(import.meta.dirname, '../../dist');

function tmp(t) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tprun-outsig-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

const counts = () => ['SIGINT', 'SIGTERM', 'exit'].map((s) => process.listenerCount(s));

test('a library save (checkpoint and engine) leaves process-wide listeners as it found them', async (t) => {
  const d = tmp(t);
  const before = counts();
  generateCheckpoint({ preset: 'brown', layers: 1, out: path.join(d, 'model'), seed: 1 });
  assert.deepEqual(counts(), before, 'after generateCheckpoint');
  const model = LlamaForCausalLM.fromHuggingFace(path.join(d, 'model'));
  model.saveCheckpoint(path.join(d, 'ckpt'));
  const engine = await build(model, { max_seq_len: 64, max_input_len: 32 });
  await engine.save(path.join(d, 'engine'));
  assert.deepEqual(counts(), before, 'after Engine.save');
  // A failed save too.
  fs.writeFileSync(path.join(d, 'file'), 'x');
  await assert.rejects(engine.save(path.join(d, 'file')), /exists and is not a directory/);
  assert.deepEqual(counts(), before, 'after a refused Engine.save');
});

function runScript(src, onLine) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s) => { out += s; if (onLine) onLine(s, child); });
  child.stderr.setEncoding('utf8').on('data', (s) => (err += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60000); // hang guard only
  return new Promise((res) => child.on('close', (code, signal) => { clearTimeout(timer); res({ code, signal, out, err }); }));
}

test('after a library save, SIGINT reaches only the application\'s own handler (the process is not exited for it)', async (t) => {
  const d = tmp(t);
  const r = await runScript(`
    import { generateCheckpoint } from ${JSON.stringify(path.join(DIST, 'checkpoint/generate.js'))};
    process.on('SIGINT', () => { console.log('app handled'); setTimeout(() => process.exit(0), 200); });
    generateCheckpoint({ preset: 'brown', layers: 1, out: ${JSON.stringify(path.join(d, 'm'))}, seed: 1 });
    console.log('saved');
    setTimeout(() => {}, 30000);
  `, (s, child) => { if (s.includes('saved')) child.kill('SIGINT'); });
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal}: ${r.out} ${r.err}`);
  assert.match(r.out, /app handled/);
});

test('a signal during the write removes the temporary directory, then has its default effect', async (t) => {
  const d = tmp(t);
  const out = path.join(d, 'out');
  const r = await runScript(`
    import fs from 'node:fs';
    import { openTemp, tempSibling } from ${JSON.stringify(path.join(DIST, 'checkpoint/outdir.js'))};
    const tmp = tempSibling(${JSON.stringify(out)}, 'sig');
    openTemp(tmp);
    fs.writeFileSync(tmp + '/rank0.safetensors', 'half');
    console.log('writing');
    setTimeout(() => {}, 30000);
  `, (s, child) => { if (s.includes('writing')) child.kill('SIGTERM'); });
  assert.equal(r.signal, 'SIGTERM', `exit ${r.code} ${r.signal}: ${r.err}`);
  assert.deepEqual(fs.readdirSync(d), []);
});
