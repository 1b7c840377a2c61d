// `tprun generate`: tensor-parallel generation from an engine directory. Starts the engine's ranks (or
// joins the world it runs in); rank 0 prints the result.

import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { InputError } from '../core/errors.js';
import { ansiOn, exitOnError, rankRunOptions, parseIds, runOnRanks } from '../engine/cli-util.js';
import { Engine, engineWorldSize } from '../engine/engine.js';
import { newTokenBudget } from '../engine/generate.js';
import { loadRunner } from '../engine/load-runner.js';
import { webgpuEpOptions } from '../engine/device.js';
import { figuresLine, gatherRankFigures, percentiles, traceMemory } from '../engine/monitor.js';
import { hasTokenizer, loadTokenizer, type TextTokenizer } from '../engine/tokenizer.js';
import type { World } from '../rank/types.js';
import { joinsWorld } from '../rank/identity.js';
import { progress } from '../util/progress.js';

interface GenerateArgs {
  engine: string;
  prompt?: string[];
  'input-ids'?: string[];
  'max-new-tokens': number;
  temperature: number;
  'top-k'?: number;
  'top-p'?: number;
  seed: number;
  'ignore-eos': boolean;
  tokenizer?: string;
  threads?: number;
  device?: 'cpu' | 'gpu' | 'auto';
  kernels: 'auto' | 'ort' | 'wgsl';
  json: boolean;
  logits: boolean;
  'micro-batches'?: number;
  quiet: boolean;
  trace?: string;
}

const command: CommandModule<object, GenerateArgs> = {
  command: 'generate',
  describe: 'generate a continuation of one or more prompts with an engine (tensor-parallel across its ranks)',
  builder: (y) => rankRunOptions(y)
    .option('engine', { type: 'string', demandOption: true, describe: 'engine directory (tprun build --out)' })
    .option('prompt', { type: 'string', array: true, describe: 'prompt text (repeat for a batch)' })
    .option('input-ids', { type: 'string', array: true, describe: 'prompt token ids, comma-separated (repeat for a batch)' })
    .option('max-new-tokens', { type: 'number', default: 32 })
    .option('temperature', { type: 'number', default: 0, describe: '0 = greedy' })
    .option('top-k', { type: 'number' })
    .option('top-p', { type: 'number' })
    .option('seed', { type: 'number', default: 0 })
    .option('ignore-eos', { type: 'boolean', default: false, describe: 'keep generating past the end-of-text token' })
    .option('tokenizer', { type: 'string', describe: 'directory with tokenizer.json (default: the engine\'s copy)' })
    .option('threads', { type: 'number', describe: 'ORT threads per rank (default: cores / local ranks)' })
    .option('device', { choices: ['cpu', 'gpu', 'auto'] as const, describe: 'execution provider: gpu = onnxruntime WebGPU (default: the engine\'s build --device)' })
    .option('kernels', { choices: ['auto', 'ort', 'wgsl'] as const, default: 'auto' as const, describe: 'auto = tprun\'s WGSL kernels where they run the engine (float16 or int4/int8 weight-only, any tp × pp, on a GPU), else onnxruntime; ort = onnxruntime\'s kernels; wgsl = tprun\'s own WGSL kernels on the GPU (Dawn)' })
    .option('json', { type: 'boolean', default: false, describe: 'one JSON line per prompt on stdout' })
    .option('logits', { type: 'boolean', default: false, describe: 'with --json: add last_prompt_logits (the full vocabulary, per prompt)' })
    .option('micro-batches', { type: 'number', describe: 'pipeline engines (pp > 1): micro-batches of the prompts in flight together (default: min(prompts, pp))' })
    .check((a) => {
      if (!a.prompt?.length && !a['input-ids']?.length) throw new Error('give --prompt TEXT or --input-ids 0,1,2');
      if (a.prompt?.length && a['input-ids']?.length) throw new Error('--prompt and --input-ids are mutually exclusive');
      if (!Number.isInteger(a['max-new-tokens']) || a['max-new-tokens'] < 0) throw new Error(`--max-new-tokens ${a['max-new-tokens']}: must be a non-negative integer`);
      if (a['micro-batches'] !== undefined && (!Number.isInteger(a['micro-batches']) || a['micro-batches'] < 1)) throw new Error(`--micro-batches ${a['micro-batches']}: must be a positive integer`);
      if (a.kernels === 'wgsl' && a.device === 'cpu') throw new Error('--kernels wgsl runs on the GPU: drop --device cpu (or use --kernels ort)');
      if (!(a.temperature >= 0)) throw new Error(`--temperature ${a.temperature}: must be ≥ 0`);
      if (a['top-k'] !== undefined && (!Number.isInteger(a['top-k']) || a['top-k'] < 1)) throw new Error(`--top-k ${a['top-k']}: must be a positive integer`);
      if (a['top-p'] !== undefined && !(a['top-p'] > 0 && a['top-p'] <= 1)) throw new Error(`--top-p ${a['top-p']}: must lie in (0, 1]`);
      return true;
    }) as never,
  handler: (a) => exitOnError(async () => {
    const dir = resolve(a.engine);
    const config = await Engine.readConfig(dir);
    const tokDir = a.tokenizer ? resolve(a.tokenizer) : dir;
    let tok: TextTokenizer | undefined;
    if (a.prompt?.length || hasTokenizer(tokDir)) tok = loadTokenizer(tokDir);
    const prompts = a.prompt?.length
      ? a.prompt.map((p) => tok!.encode(p))
      : a['input-ids']!.map((s) => parseIds(s, '--input-ids'));
    const bc = config.build_config;
    prompts.forEach((p, i) => {
      if (p.length > bc.max_input_len) throw new InputError(`prompt ${i} has ${p.length} tokens, more than the engine's max_input_len ${bc.max_input_len} (rebuild with --max-input-len)`);
    });
    // Checked before ranks start: no room at all is an input error; more than the room is capped, and said so.
    const budget = newTokenBudget(bc, prompts, a['max-new-tokens']);
    const eos = config.pretrained_config.eos_token_id;
    const eosIds = a['ignore-eos'] ? [] : eos === undefined ? [] : Array.isArray(eos) ? eos : [eos];

    webgpuEpOptions(); // refused here, once, before any rank starts (each rank's EngineRunner.load reads it)
    // A rank file missing or cut short is refused before any rank starts; a checksum is each rank's to verify.
    if (!joinsWorld(engineWorldSize(config))) await Engine.checkRanks(dir, config);
    await runOnRanks(engineWorldSize(config), async (world: World) => {
      if (budget.capped && world.rank === 0) {
        process.stderr.write(`tprun: note: --max-new-tokens ${a['max-new-tokens']} capped to ${budget.maxNew}: the engine's max_seq_len ${bc.max_seq_len} less the longest prompt's ${bc.max_seq_len - budget.room} tokens\n`);
      }
      const t0 = performance.now();
      const engine = await Engine.fromDir(dir, world.rank, { worldSize: world.size });
      const { runner, generate: run } = await loadRunner(engine, world, { kernels: a.kernels, threads: a.threads, device: a.device });
      const loadMs = performance.now() - t0;
      traceMemory(runner);
      const bar = progress('generate', budget.maxNew, 'tokens');
      const res = await run(prompts, {
        maxNewTokens: a['max-new-tokens'],
        temperature: a.temperature,
        topK: a['top-k'],
        topP: a['top-p'],
        seed: a.seed,
        eosIds,
        microBatches: a['micro-batches'],
        onStep: () => bar.tick(),
      });
      bar.done();
      await runner.close();
      const ranks = await gatherRankFigures(world, runner, res.timings.step_ms, res.timings.ttft_ms);
      if (world.rank !== 0) return;
      const own = percentiles(res.timings.step_ms);
      const timings = {
        load_ms: round(loadMs),
        prefill_ms: round(res.timings.prefill_ms),
        decode_ms_per_token: round(res.timings.decode_ms_per_token),
        tokens_per_s: round(res.timings.tokens_per_s),
        // Rank 0 samples (or, with pp, gets the tokens back): its view is the caller's.
        ttft_ms: round(res.timings.ttft_ms),
        decode_ms_p50: own.p50 === null ? null : round(own.p50),
        decode_ms_p90: own.p90 === null ? null : round(own.p90),
        decode_ms_p99: own.p99 === null ? null : round(own.p99),
      };
      res.newIds.forEach((ids, b) => {
        // No new tokens (--max-new-tokens 0, or an immediate stop) decode to nothing.
        const text = tok && ids.length ? tok.decode(ids) : '';
        const shownText = tok && ids.length ? tok.decode(ids, { skipSpecial: true }) : '';
        if (a.json) {
          process.stdout.write(`${JSON.stringify({
            prompt_ids: res.promptIds[b],
            new_ids: ids,
            text,
            ...(a.logits ? { last_prompt_logits: Array.from(res.lastPromptLogits[b]) } : {}),
            timings,
            ranks,
          })}\n`);
        } else {
          const prompt = tok ? tok.decode(res.promptIds[b], { skipSpecial: true }) : res.promptIds[b].join(',');
          const shown = !tok ? ` -> ${ids.join(',')}` : ansiOn(process.stdout) ? `\x1b[1m${shownText}\x1b[0m` : shownText;
          process.stdout.write(`${prompt}${shown}\n`);
        }
      });
      // Stats are for the person watching: stderr (stdout stays the generated text), and not with -q.
      if (!a.json && !a.quiet) {
        const nPrompt = prompts.reduce((s, p) => s + p.length, 0);
        process.stderr.write(
          `${config.pp_size && config.pp_size > 1 ? `tp ${config.tp_size} × pp ${config.pp_size}` : `tp ${world.size}`} · load ${timings.load_ms} ms · prefill ${nPrompt} tokens in ${timings.prefill_ms} ms ` +
          `(${round(nPrompt / (res.timings.prefill_ms / 1000))} tokens/s) · decode ${timings.decode_ms_per_token} ms/step ` +
          `(${timings.tokens_per_s} tokens/s, batch ${prompts.length})\n`);
        process.stderr.write(`${figuresLine(ranks!)}\n`);
      }
    }, a);
  }),
};
export default command;

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
