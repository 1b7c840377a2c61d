// `tprun perplexity`: held-out perplexity of an engine, protocol of models/brown-llama-a-reference.json
// ([BOS] + line + [EOS] per line, first max-tokens + 1 tokens, non-overlapping windows).

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { InputError } from '../core/errors.js';
import { exitOnError, rankRunOptions, runOnRanks } from '../engine/cli-util.js';
import { Engine, engineWorldSize } from '../engine/engine.js';
import { loadRunner } from '../engine/load-runner.js';
import { webgpuEpOptions } from '../engine/device.js';
import { figuresLine, gatherRankFigures, traceMemory } from '../engine/monitor.js';
import { perplexity, perplexityTokens } from '../engine/perplexity.js';
import { loadTokenizer } from '../engine/tokenizer.js';
import type { World } from '../rank/types.js';
import { joinsWorld } from '../rank/identity.js';
import { progress } from '../util/progress.js';

interface PplArgs {
  engine: string;
  file?: string;
  'max-tokens': number;
  window: number;
  tokenizer?: string;
  threads?: number;
  device?: 'cpu' | 'gpu' | 'auto';
  kernels: 'auto' | 'ort' | 'wgsl';
  json: boolean;
  quiet: boolean;
  trace?: string;
}

export function bundledHeldout(): string {
  return fileURLToPath(new URL('../../data/brown-heldout.txt', import.meta.url));
}

const command: CommandModule<object, PplArgs> = {
  command: 'perplexity',
  describe: 'perplexity of an engine on a text file (windows of --window tokens)',
  builder: (y) => rankRunOptions(y)
    .option('engine', { type: 'string', demandOption: true })
    .option('file', { type: 'string', describe: 'text, one sample per line (default: the bundled data/brown-heldout.txt)' })
    .option('max-tokens', { type: 'number', default: 8192, describe: 'predictions scored' })
    .option('window', { type: 'number', default: 256, describe: 'inputs per window' })
    .option('tokenizer', { type: 'string', describe: 'directory with tokenizer.json (default: the engine\'s copy)' })
    .option('threads', { type: 'number', describe: 'ORT threads per rank' })
    .option('device', { choices: ['cpu', 'gpu', 'auto'] as const, describe: 'execution provider: gpu = onnxruntime WebGPU (default: the engine\'s build --device)' })
    .option('kernels', { choices: ['auto', 'ort', 'wgsl'] as const, default: 'auto' as const, describe: 'auto = tprun\'s WGSL kernels where they run the engine (float16 or int4/int8 weight-only, any tp × pp, on a GPU), else onnxruntime; ort = onnxruntime\'s kernels; wgsl = tprun\'s own WGSL kernels on the GPU (Dawn)' })
    .option('json', { type: 'boolean', default: false })
    .check((a) => {
      if (a.kernels === 'wgsl' && a.device === 'cpu') throw new Error('--kernels wgsl runs on the GPU: drop --device cpu (or use --kernels ort)');
      for (const k of ['max-tokens', 'window'] as const) {
        if (!Number.isInteger(a[k]) || a[k] < 1) throw new Error(`--${k} ${a[k]}: must be a positive integer`);
      }
      return true;
    }) as never,
  handler: (a) => exitOnError(async () => {
    const dir = resolve(a.engine);
    const config = await Engine.readConfig(dir);
    const file = resolve(a.file ?? bundledHeldout());
    if (!existsSync(file)) throw new InputError(`--file ${file}: no such file`);
    const tok = loadTokenizer(a.tokenizer ? resolve(a.tokenizer) : dir);
    const pc = config.pretrained_config;
    const eos = Array.isArray(pc.eos_token_id) ? pc.eos_token_id[0] : pc.eos_token_id;
    if (pc.bos_token_id === undefined || eos === undefined) throw new InputError(`${dir}/config.json: bos_token_id / eos_token_id missing`);
    const tokens = perplexityTokens(tok, readFileSync(file, 'utf8'), pc.bos_token_id, eos, a['max-tokens'] + 1);
    if (a.window > config.build_config.max_input_len) throw new InputError(`--window ${a.window} exceeds the engine's max_input_len ${config.build_config.max_input_len}`);
    webgpuEpOptions(); // refused here, once, before any rank starts (each rank's EngineRunner.load reads it)
    // A rank file missing or cut short is refused before any rank starts; a checksum is each rank's to verify.
    if (!joinsWorld(engineWorldSize(config))) await Engine.checkRanks(dir, config);
    await runOnRanks(engineWorldSize(config), async (world: World) => {
      const engine = await Engine.fromDir(dir, world.rank, { worldSize: world.size });
      const { runner } = await loadRunner(engine, world, { kernels: a.kernels, threads: a.threads, device: a.device });
      traceMemory(runner);
      const bar = progress('perplexity', Math.floor((tokens.length - 1) / a.window), 'windows');
      const t0 = performance.now();
      // Latency per batch of windows (max_batch_size windows go through the engine together) on this rank.
      const batchMs: number[] = [];
      let last = t0;
      const res = await perplexity(runner, tokens, a.window, (n) => {
        const now = performance.now();
        batchMs.push(now - last);
        last = now;
        bar.tick(n);
      });
      bar.done();
      await runner.close();
      const names = { first: 'first_batch_ms', steps: 'batch_ms' };
      const ranks = await gatherRankFigures(world, runner, batchMs.slice(1), batchMs[0], names);
      if (world.rank !== 0) return;
      if (a.json) process.stdout.write(`${JSON.stringify({ ...res, ranks })}\n`);
      else {
        process.stdout.write(`perplexity ${res.ppl.toFixed(4)} (mean NLL ${res.mean_nll.toFixed(6)} over ${res.tokens} tokens, tp ${config.tp_size}${(config.pp_size ?? 1) > 1 ? ` × pp ${config.pp_size}` : ''}, ${(performance.now() - t0).toFixed(0)} ms)\n`);
        if (!a.quiet) process.stderr.write(`${figuresLine(ranks!, names)}\n`);
      }
    }, a);
  }),
};
export default command;
