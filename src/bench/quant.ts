// `tprun bench quant`: every quantization scheme on brown-llama-a at tp=2 — held-out perplexity (the
// reference file's protocol) next to transformers' float32 value and to the float32 engine built in the
// same run, engine bytes per rank, and decode speed (`tprun bench generate`). One JSON line per scheme,
// then (without --json) the README table. Each engine is built by `tprun build --model ... --quant`,
// i.e. rank 0 calibrates and quantizes and the other rank receives its shard.
//
// The held-out protocol scores windows by prefill, where attention reads the window's own keys and
// values in float (as TensorRT-LLM's context phase does), so a quantized KV cache cannot show there.
// For the float32 and KV-cache rows the bench also scores the first --decode-windows windows token by
// token through the cache (teacher forcing): every prediction then reads past keys/values from it.

import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';
import { runOnRanks } from '../engine/cli-util.js';
import { Engine } from '../engine/engine.js';
import type { World } from '../rank/types.js';
import { dirBytes } from './stats.js';

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Scheme { name: string; args: string[]; target?: { maxRelPct?: number; betterThan?: string } }

const SCHEMES: Scheme[] = [
  { name: 'float32', args: [] },
  { name: 'int8_wo', args: ['--quant', 'int8_wo'], target: { maxRelPct: 0.25 } },
  { name: 'fp8', args: ['--quant', 'fp8'], target: { maxRelPct: 0.5 } },
  { name: 'w8a8', args: ['--quant', 'w8a8'] },
  { name: 'w8a8_sq', args: ['--quant', 'w8a8_sq'], target: { maxRelPct: 0.5, betterThan: 'w8a8' } },
  { name: 'int4_wo', args: ['--quant', 'int4_wo', '--group-size', '128'], target: { maxRelPct: 3 } },
  { name: 'int4_awq', args: ['--quant', 'int4_awq', '--group-size', '128'], target: { betterThan: 'int4_wo' } },
  // int4 AWQ weights with FP8 activations (TensorRT-LLM W4A8_AWQ): activations fake-quantized to FP8.
  { name: 'w4a8_awq', args: ['--quant', 'w4a8_awq', '--group-size', '128'], target: { maxRelPct: 3 } },
  { name: 'kv_int8', args: ['--kv-cache', 'int8'], target: { maxRelPct: 0.25 } },
];

interface Args { ops?: string; model: string; tp: number; only?: string[]; json: boolean; reps: number; 'decode-ppl'?: string; 'decode-windows': number }

/** Teacher-forced perplexity through the KV cache over the first `nWin` windows (run on the engine's ranks). */
async function decodePathPerplexity(dir: string, nWin: number): Promise<void> {
  const config = await Engine.readConfig(dir);
  const { EngineRunner } = await import('../engine/runtime.js');
  const { loadTokenizer } = await import('../engine/tokenizer.js');
  const { perplexityTokens } = await import('../engine/perplexity.js');
  await runOnRanks(config.tp_size, async (world: World) => {
    const runner = await EngineRunner.load(await Engine.fromDir(dir, world.rank, { worldSize: world.size, verify: false }), world);
    try {
      const W = 256;
      const pc = config.pretrained_config;
      const bos = typeof pc.bos_token_id === 'number' ? pc.bos_token_id : 0;
      const eos = typeof pc.eos_token_id === 'number' ? pc.eos_token_id : 1;
      const toks = perplexityTokens(loadTokenizer(join(ROOT, 'models/brown-llama-a')), readFileSync(join(ROOT, 'data/brown-heldout.txt'), 'utf8'), bos, eos, W * nWin + 1);
      const V = runner.vocabSize;
      const B = Math.min(config.build_config.max_batch_size, nWin);
      let nll = 0, count = 0, kvDtype = '';
      for (let w0 = 0; w0 < nWin; w0 += B) {
        const b = Math.min(B, nWin - w0);
        const cache = runner.newCache(b, W);
        kvDtype = cache.tensors[0][0].type;
        for (let i = 0; i < W; i++) {
          const ids = Array.from({ length: b }, (_, j) => toks[(w0 + j) * W + i]);
          const logits = await runner.forward({ batch: b, seq: 1, ids, seqlensK: new Int32Array(b).fill(i), totalSeq: i + 1, positions: new Array(b).fill(0), npos: 1 }, cache);
          for (let j = 0; j < b; j++) {
            const row = logits.subarray(j * V, (j + 1) * V);
            let m = -Infinity;
            for (let v = 0; v < V; v++) m = Math.max(m, row[v]);
            let sum = 0;
            for (let v = 0; v < V; v++) sum += Math.exp(row[v] - m);
            nll += Math.log(sum) + m - row[toks[(w0 + j) * W + i + 1]];
            count++;
          }
        }
      }
      if (world.rank === 0) process.stdout.write(`${JSON.stringify({ decode_path_ppl: Math.exp(nll / count), tokens: count, kv_cache_dtype: kvDtype })}\n`);
    } finally {
      await runner.close();
    }
  }, { quiet: true });
}

function lastJson(stdout: string, pick: (o: Record<string, any>) => boolean = () => true): Record<string, any> {
  const line = stdout.trim().split('\n').reverse().find((l) => l.startsWith('{') && pick(JSON.parse(l)));
  if (!line) throw new Error(`no JSON in output:\n${stdout}`);
  return JSON.parse(line);
}

const command: CommandModule<object, Args> = {
  command: 'quant',
  describe: 'perplexity, engine size and decode speed of every quantization scheme (tp=2, brown-llama-a)',
  builder: (y) => y
    .option('model', { type: 'string', default: join(ROOT, 'models/brown-llama-a') })
    .option('tp', { type: 'number', default: 2 })
    .option('only', { type: 'string', array: true, describe: `schemes to run (${SCHEMES.map((s) => s.name).join(', ')})` })
    .option('reps', { type: 'number', default: 2, describe: 'decode timing repetitions' })
    .option('decode-windows', { type: 'number', default: 8, describe: 'windows scored token by token through the KV cache (float32 and KV rows)' })
    .option('decode-ppl', { type: 'string', hidden: true })
    .option('ops', { type: 'string', describe: 'instead: which quantized kernels this execution provider (cpu, webgpu) runs without CPU fallback' })
    .option('json', { type: 'boolean', default: false }) as never,
  handler: async (a) => {
    if (a['decode-ppl']) return decodePathPerplexity(a['decode-ppl'], a['decode-windows']);
    if (a.ops) {
      const { probeQuantKernels } = await import('../quantization/ep-support.js');
      for (const r of await probeQuantKernels(a.ops, a.ops !== 'cpu')) process.stdout.write(`${JSON.stringify({ bench: 'quant-ops', ...r })}\n`);
      return;
    }
    const ref = JSON.parse(readFileSync(join(ROOT, 'models/brown-llama-a-reference.json'), 'utf8')).heldout_ppl.ppl as number;
    const tmp = mkdtempSync(join(tmpdir(), 'tprun-bench-quant-'));
    const rows: Record<string, any>[] = [];
    try {
      for (const s of SCHEMES.filter((x) => !a.only?.length || a.only.includes(x.name))) {
        const eng = join(tmp, s.name);
        const t0 = performance.now();
        await execa(process.execPath, [CLI, 'build', '--model', a.model, '--tp', String(a.tp), '--out', eng, '--max-input-len', '256', '--max-seq-len', '512', '--quiet', ...s.args], { stdio: ['ignore', 'ignore', 'inherit'] });
        const buildS = (performance.now() - t0) / 1000;
        const p = lastJson((await execa(process.execPath, [CLI, 'perplexity', '--engine', eng, '--json', '--quiet'], { stderr: 'inherit' })).stdout);
        // bench generate prints the engine's line, then its transformers reference line.
        const g = lastJson((await execa(process.execPath, [CLI, 'bench', 'generate', '--engine', eng, '--json', '--reps', String(a.reps)], { stderr: 'inherit' })).stdout, (o) => o.engine === eng);
        const cfg = JSON.parse(readFileSync(join(eng, 'config.json'), 'utf8')).pretrained_config.quantization ?? {};
        const row: Record<string, any> = {
          bench: 'quant', scheme: s.name, tp: a.tp,
          quant_algo: cfg.quant_algo ?? null, kv_cache_quant_algo: cfg.kv_cache_quant_algo ?? null, group_size: cfg.group_size ?? null,
          ppl: +p.ppl.toFixed(4), reference_ppl: +ref.toFixed(4), rel_to_reference_pct: +((p.ppl / ref - 1) * 100).toFixed(3),
          engine_bytes_per_rank: Array.from({ length: a.tp }, (_, r) => dirBytes(join(eng, `rank${r}`))),
          decode_ms_per_token: g.decode_ms_per_token, prefill_tokens_per_s: g.prefill_tokens_per_s,
          build_s: +buildS.toFixed(1),
        };
        if (s.name === 'float32' || s.name.startsWith('kv_')) {
          const d = lastJson((await execa(process.execPath, [CLI, 'bench', 'quant', '--decode-ppl', eng, '--decode-windows', String(a['decode-windows'])], { stderr: 'inherit' })).stdout);
          row.decode_path_ppl = +d.decode_path_ppl.toFixed(4);
          row.decode_path_tokens = d.tokens;
          row.kv_cache_dtype = d.kv_cache_dtype;
          const f = rows.find((r) => r.scheme === 'float32');
          if (f && s.name !== 'float32') row.decode_path_rel_to_float32_pct = +((d.decode_path_ppl / f.decode_path_ppl - 1) * 100).toFixed(3);
        }
        if (s.target?.maxRelPct !== undefined) row.target_max_rel_pct = s.target.maxRelPct;
        if (s.target?.betterThan) {
          const other = rows.find((r) => r.scheme === s.target!.betterThan);
          if (other) { row.better_than = other.scheme; row.better = p.ppl < other.ppl; }
        }
        row.meets_target = (s.target?.maxRelPct === undefined || Math.abs(row.rel_to_reference_pct) <= s.target.maxRelPct) && row.better !== false;
        // A KV-cache row counts only if the engine really holds int8 and the cache-read path stays close.
        if (s.name.startsWith('kv_')) {
          row.meets_target &&= row.kv_cache_dtype === 'int8' && Math.abs(row.decode_path_rel_to_float32_pct ?? Infinity) <= s.target!.maxRelPct!;
        }
        const f32 = rows.find((r) => r.scheme === 'float32');
        if (f32) row.rel_to_float32_engine_pct = +((p.ppl / f32.ppl - 1) * 100).toFixed(3);
        rows.push(row);
        if (a.json) process.stdout.write(`${JSON.stringify(row)}\n`);
        rmSync(eng, { recursive: true, force: true });
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    if (!a.json) {
      const mib = (b: number) => (b / 2 ** 20).toFixed(2);
      process.stdout.write(`| scheme | quant_algo | held-out ppl | vs float32 ${ref.toFixed(3)} | engine MiB/rank | decode ms/token | meets target |\n|---|---|---|---|---|---|---|\n`);
      for (const r of rows) {
        const algo = [r.quant_algo, r.kv_cache_quant_algo && `KV ${r.kv_cache_quant_algo}`].filter(Boolean).join(' + ') || '—';
        process.stdout.write(`| ${r.scheme} | ${algo} | ${r.ppl.toFixed(3)} | ${r.rel_to_reference_pct >= 0 ? '+' : ''}${r.rel_to_reference_pct.toFixed(3)}% | ${r.engine_bytes_per_rank.map(mib).join(' / ')} | ${r.decode_ms_per_token} | ${r.meets_target ? 'yes' : 'NO'} |\n`);
        if (r.decode_path_ppl !== undefined) {
          process.stdout.write(`|  ↳ through the KV cache (${r.kv_cache_dtype}) | | ${r.decode_path_ppl.toFixed(3)} | ${r.decode_path_rel_to_float32_pct !== undefined ? `${r.decode_path_rel_to_float32_pct >= 0 ? '+' : ''}${r.decode_path_rel_to_float32_pct.toFixed(3)}% vs float32 cache` : `${r.decode_path_tokens} tokens`} | | | |\n`);
        }
      }
    }
  },
};
export default command;
