// brown-llama-a on a device: held-out perplexity and greedy tokens against transformers' float32
// reference (models/brown-llama-a-reference.json). Usage: node scripts/gpu/quality.mjs ENGINE LABEL DEVICE [KERNELS]
// (KERNELS: ort, the default here, since these rows measure onnxruntime's provider; wgsl; auto)
// Prints one JSON line {check: 'quality', ...}; exits 1 when a promise of issue 6 is not met.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const [engine, label, device, kernels = 'ort'] = process.argv.slice(2);
const ref = JSON.parse(readFileSync(new URL('../../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));
const cli = (args) => execFileSync(process.execPath, ['dist/cli.js', ...args, '--device', device, '--kernels', kernels, '--json', '-q'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  .split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));

let ppl = { ppl: NaN };
try { [ppl] = cli(['perplexity', '--engine', engine]); } catch (e) { process.stderr.write(`perplexity failed: ${e.message.split('\n')[0]}\n`); }
// One prompt per call (batch 1, as the reference generated them).
const gen = ref.prompts.map((p) => cli(['generate', '--engine', engine, '--max-new-tokens', '24', '--ignore-eos', '--input-ids', p.input_ids.join(',')])[0]);
const relL2 = (a, b) => Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / b.reduce((s, x) => s + x * x, 0));
const perPrompt = ref.prompts.map((p, i) => {
  const got = gen[i].new_ids;
  const want = p.greedy_new_ids;
  const firstDiff = want.findIndex((t, k) => got[k] !== t);
  return { equal: firstDiff < 0 && got.length === want.length, first_diff: firstDiff, logits_rel_l2: +relL2(gen[i].last_prompt_logits, p.last_logits).toExponential(3) };
});
const r = {
  check: 'quality', label, device,
  ppl: +ppl.ppl.toFixed(4), ppl_rel_diff: +(Math.abs(ppl.ppl - ref.heldout_ppl.ppl) / ref.heldout_ppl.ppl).toFixed(5),
  greedy_equal: perPrompt.filter((p) => p.equal).length, prompts: perPrompt,
};
process.stdout.write(`${JSON.stringify(r)}\n`);
process.exit(r.ppl_rel_diff < 0.01 && r.greedy_equal >= 3 ? 0 : 1);
