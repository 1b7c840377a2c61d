// `tprun build`: TensorRT-LLM checkpoint → per-rank ONNX engines, or HF/Meta model → engines in one step
// (converted in memory, no checkpoint written). One rank per tensor-parallel shard; started here unless
// already inside a world of the right size.

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { InputError, isInputError } from '../core/errors.js';
import { onOff } from '../util/env.js';
import { checkOutDir } from '../checkpoint/outdir.js';
import type { World } from '../rank/types.js';
import { detectIdentity, joinsWorld } from '../rank/identity.js';
import { build, maxSeqLenRefusal } from '../engine/engine.js';
import { setQuantLinear } from '../engine/linear.js';
import { prefillInt8GemmRefusal } from '../engine/build-config.js';
import { streamingForced } from '../engine/weight-file.js';
import { hasTokenizer, tokenizerFiles } from '../engine/tokenizer.js';
import { progress } from '../util/progress.js';
import { traceSpan } from '../util/trace.js';
import { loadShardForBuild } from '../engine/load-shard.js';
import { Mapping } from '../sharding/mapping.js';
import { exitOnError, rankRunOptions, runOnRanks } from '../engine/cli-util.js';
import { quantOptions, quantRequestFrom } from '../quantization/cli-options.js';
import { weightOnlyBits } from '../quantization/weight-only.js';
import { LlamaForCausalLM } from '../model/llama.js';
import type { PretrainedConfig } from '../core/config.js';

interface BuildArgs {
  checkpoint?: string;
  model?: string;
  tp?: number;
  pp?: number;
  out: string;
  'max-batch-size': number;
  'max-input-len': number;
  'max-seq-len': number;
  dtype: 'float32' | 'float16';
  device: 'cpu' | 'gpu' | 'auto';
  'int4-matmul-dtype'?: 'float32' | 'auto';
  'int4-accuracy-level'?: number;
  'lm-head-quant'?: 'none' | 'int8' | 'int4';
  'lm-head-block-size'?: number;
  tokenizer?: string;
  'parallel-embedding': boolean;
  force: boolean;
  quiet: boolean;
  trace?: string;
  [k: string]: unknown;
}

const command: CommandModule<object, BuildArgs> = {
  command: 'build',
  describe: 'build per-rank ONNX engines from a TensorRT-LLM checkpoint (--checkpoint) or a HF/Meta model (--model)',
  builder: (y) => {
    const b = rankRunOptions(quantOptions(y))
      .option('checkpoint', { type: 'string', alias: 'checkpoint_dir', describe: 'TensorRT-LLM checkpoint directory (config.json + rank{r}.safetensors)' })
      .option('model', { type: 'string', alias: 'model_dir', describe: 'Hugging Face or Meta model directory (converted in memory)' })
      .option('tp', { type: 'number', alias: 'tp_size', describe: 'tensor-parallel ranks (with --model; default 1)' })
      .option('pp', { type: 'number', alias: 'pp_size', describe: 'pipeline stages of whole layers (with --model; default 1); the engine runs on tp × pp ranks' })
      .option('out', { type: 'string', alias: 'output_dir', demandOption: true, describe: 'engine directory to write (an existing one is replaced only if empty or written by tprun)' })
      .option('force', { type: 'boolean', default: false, describe: 'also replace an existing --out that tprun did not write (never the current directory, home or the input)' })
      .option('max-batch-size', { type: 'number', default: 8, alias: 'max_batch_size' })
      .option('max-input-len', { type: 'number', default: 512, alias: 'max_input_len' })
      .option('max-seq-len', { type: 'number', default: 1024, alias: 'max_seq_len', describe: 'longest sequence (prompt + new tokens); at most the model\'s max_position_embeddings unless it has rope scaling' })
      .option('dtype', { choices: ['float32', 'float16'] as const, default: 'float32' as const })
      .option('device', { choices: ['cpu', 'gpu', 'auto'] as const, default: 'cpu' as const, describe: 'where the engine will run (auto: the GPU where a WebGPU adapter opens, else the CPU)' })
      .option('int4-matmul-dtype', { choices: ['float32', 'auto'] as const, describe: 'int4 weight-only linears of a float16 engine: float32 kernel between Casts (default; decodes faster on WebGPU) or auto = the engine dtype, no Casts (prefills faster); cf. TensorRT-LLM\'s --weight_only_groupwise_quant_matmul_plugin dtype' })
      .option('int4-accuracy-level', { type: 'number', alias: ['accuracy-level', 'int4_accuracy_level'], describe: 'MatMulNBits accuracy_level of weight-only linears (int8_wo, int4_wo, int4_awq), 0-4: 4 = int8 activations per block, as llama.cpp\'s Q8_0/Q4_0 (default 4 with --device cpu, 0 = unset with gpu); onnxruntime-genai builder\'s int4_accuracy_level' })
      .option('lm-head-quant', { choices: ['none', 'int8', 'int4'] as const, alias: 'lm_head_quant', describe: 'lm_head as MatMulNBits quantized at build (default int8 for CPU builds of int8_wo/int4_wo/int4_awq, as llama.cpp quantizes its output tensor; none otherwise)' })
      .option('prefill-int8-gemm', { type: 'boolean', alias: 'prefill_int8_gemm', describe: 'int8_wo CPU engines: prompts (calls of more than one token) on onnxruntime\'s integer GEMM over a second, int8 [K, N] copy of each decoder linear (2.4-3.7x MatMulNBits\' speed at 64 tokens; the linears\' weights held twice); decode keeps MatMulNBits' })
      .option('lm-head-block-size', { type: 'number', alias: 'lm_head_block_size', describe: 'weights per scale of a quantized lm_head: 16, 32, 64, 128 or 256 (default 256 with --device cpu at --int4-accuracy-level 4, where onnxruntime\'s int8-activation kernel reads it faster; 32, as ggml\'s Q8_0, otherwise)' })
      .option('parallel-embedding', { type: 'boolean', default: false, describe: 'with --model: shard the embedding table over the vocabulary (one more all-reduce)' })
      .option('tokenizer', { type: 'string', describe: 'directory with tokenizer.json to store in the engine (default: the model\'s)' })
      .conflicts('checkpoint', 'model')
      .check((a) => {
        if (!a.checkpoint && !a.model) throw new Error('give --checkpoint DIR or --model DIR');
        if (a.checkpoint && a.tp !== undefined) throw new Error('--tp comes from the checkpoint; use it with --model');
        for (const k of ['max-batch-size', 'max-input-len', 'max-seq-len', 'tp', 'pp'] as const) {
          const v = a[k];
          if (v !== undefined && (!Number.isInteger(v) || (v as number) < 1)) throw new Error(`--${k} ${v}: must be a positive integer`);
        }
        const acc = a['int4-accuracy-level'];
        if (acc !== undefined && (!Number.isInteger(acc) || acc < 0 || acc > 4)) throw new Error(`--int4-accuracy-level ${acc}: must be 0, 1, 2, 3 or 4 (MatMulNBits accuracy_level)`);
        const lbs = a['lm-head-block-size'];
        if (lbs !== undefined && (![16, 32, 64, 128, 256].includes(lbs))) throw new Error(`--lm-head-block-size ${lbs}: must be 16, 32, 64, 128 or 256 (MatMulNBits block_size)`);
        if (a['max-input-len'] > a['max-seq-len']) throw new Error(`--max-input-len ${a['max-input-len']} exceeds --max-seq-len ${a['max-seq-len']}`);
        return true;
      });
    return b as never;
  },
  handler: (a) => exitOnError(async () => {
    const src = resolve((a.checkpoint ?? a.model)!);
    const q = quantRequestFrom(a as never);
    // With --quant only rank 0 reads the model (the others get their shard over the world), so only the
    // launching process and rank 0 may insist that it exists here.
    const id = detectIdentity();
    const readsModel = !q || !id.inWorld || id.rank === 0;
    if (readsModel && !existsSync(src)) throw new InputError(`${a.checkpoint ? '--checkpoint' : '--model'} ${src}: no such directory`);
    const onDisk = a.checkpoint ? checkpointMapping(src) : undefined;
    // A checkpoint's rank files hold one pipeline split; another --pp needs `tprun convert --format tllm --pp P` first.
    if (onDisk && a.pp !== undefined && a.pp !== onDisk.pp) {
      throw new InputError(`--checkpoint ${src} was written for pp_size ${onDisk.pp}, not --pp ${a.pp} (reshard it with tprun convert --format tllm --pp ${a.pp})`);
    }
    const tp = onDisk ? onDisk.tp : (a.tp ?? 1);
    const pp = onDisk ? onDisk.pp : (a.pp ?? 1);
    const out = resolve(a.out);
    const tokDir = a.tokenizer ? resolve(a.tokenizer) : src;
    if (readsModel && a.tokenizer && !hasTokenizer(tokDir)) throw new InputError(`--tokenizer ${tokDir}: no tokenizer.json there`);
    const guard = { force: a.force, model: src, inputs: [tokDir] };
    checkOutDir(a.out, guard); // before any rank starts; every rank checks again where it writes
    // The engine's quant_algo: --quant's, else the checkpoint's (a --model without --quant is float).
    const algo = q?.algo ? (await import('../quantization/algorithms.js')).TRTLLM_QUANT_ALGO[q.algo] : (onDisk?.algo ?? null);
    if (!joinsWorld(tp * pp, id)) {
      // Checked once here, before ranks start, so bad input is one line rather than one per rank (and
      // nothing is spawned, loaded or written for a build that cannot succeed).
      const { weightOnlyShapeRefusal } = await import('../engine/nbits-shape.js');
      let config: PretrainedConfig;
      if (a.model) {
        const { validateConvert } = await import('../checkpoint/convert.js');
        config = validateConvert({ model: src, out, tp, pp, useParallelEmbedding: a['parallel-embedding'], force: a.force });
        if (q) (await import('../quantization/distribute.js')).checkGroups(config, q);
        const why = q?.algo ? weightOnlyShapeRefusal({ ...config, quantization: { quant_algo: algo } }) : undefined;
        if (why) throw new InputError(`--quant ${q!.algo}: ${why}; build --model ${src} without --quant`);
      } else {
        config = checkCheckpoint(src);
        // A W8A16 / W4A16 checkpoint holds float weights that each rank's engine would quantize.
        const why = weightOnlyShapeRefusal(config, 'a checkpoint converted at a tp_size whose share is a multiple of 16 avoids it');
        if (why) throw new InputError(`${join(src, 'config.json')}: quant_algo ${algo}: ${why}; build from the unquantized model`);
      }
      const refusal = a.device === 'auto' ? undefined : (await import('../engine/llama-graph.js')).ortHeadSizeRefusal(config, a.device);
      if (refusal) throw new InputError(`${a.model ? '--model' : '--checkpoint'} ${src}: ${refusal}`);
      const long = maxSeqLenRefusal(a['max-seq-len'], config);
      if (long) throw new InputError(long);
    }
    let int4MatmulDtype = a['int4-matmul-dtype'];
    // Read whatever the flag says, so a value it does not take is refused even where the flag makes it moot.
    const int4Direct = onOff('TPRUN_INT4_FP16_DIRECT', process.env, false);
    if (int4MatmulDtype === undefined && int4Direct) {
      // The flag's predecessor, said once: by rank 0 in a world, by the process itself when alone.
      if (id.inWorld ? id.rank === 0 : tp * pp === 1) process.stderr.write('tprun: note: TPRUN_INT4_FP16_DIRECT=1 is deprecated; use build --int4-matmul-dtype auto\n');
      int4MatmulDtype = 'auto';
    }
    const buildConfig = {
      max_batch_size: a['max-batch-size'],
      max_input_len: a['max-input-len'],
      max_seq_len: a['max-seq-len'],
      dtype: a.dtype,
      ...(int4MatmulDtype ? { int4_matmul_dtype: int4MatmulDtype } : {}),
      ...(a['int4-accuracy-level'] !== undefined ? { int4_accuracy_level: a['int4-accuracy-level'] } : {}),
      ...(a['lm-head-quant'] ? { lm_head_quant: a['lm-head-quant'] } : {}),
      ...(a['lm-head-block-size'] !== undefined ? { lm_head_block_size: a['lm-head-block-size'] } : {}),
      ...(a['prefill-int8-gemm'] ? { prefill_int8_gemm: true } : {}),
    };
    if (a['prefill-int8-gemm']) {
      // Refused before any rank loads or quantizes (minutes on a 7B) where it would build nothing; the
      // engine would otherwise record prefill_int8_gemm: true without it.
      const why = prefillInt8GemmRefusal({ device: a.device === 'auto' ? undefined : a.device, dtype: a.dtype, int4_matmul_dtype: int4MatmulDtype }, algo, q?.algo);
      if (why) throw new InputError(why);
    }
    streamingForced(); // TPRUN_BUILD_WRITER: refused here, once, before any rank starts (each rank's writer reads it)
    await runOnRanks(tp * pp, async (world: World) => {
      const t0 = performance.now();
      // --device auto is decided inside the world, once per adapter (device.ts agreeDevice): every rank
      // must build for the same device, and the launching process does not probe at all.
      const device = a.device === 'auto' ? (await (await import('../engine/device.js')).agreeDevice(world)).device : a.device;
      // Every rank agreed the same device, so every rank refuses alike, before the load.
      const why = buildConfig.prefill_int8_gemm && a.device === 'auto' ? prefillInt8GemmRefusal({ device, dtype: a.dtype, int4_matmul_dtype: int4MatmulDtype }, algo, q?.algo) : undefined;
      if (why) throw new InputError(`--device auto chose ${device}: ${why}`);
      const model = await traceSpan('load', async () => {
        if (q) return (await import('../quantization/distribute.js')).quantizeAndDistribute(world, { model: src, tokenizer: tokDir, useParallelEmbedding: a['parallel-embedding'], pp, forEngine: true }, q);
        // W8A16/W4A16 checkpoints hold float weights quantized at load: by rank 0 only, which sends the shards.
        if (onDisk?.weightOnly) return (await import('../quantization/distribute.js')).loadWeightOnlyAndDistribute(world, src);
        return loadShardForBuild({ checkpoint: a.checkpoint ? src : undefined, model: a.model ? src : undefined, tp, pp, world, parallelEmbedding: a['parallel-embedding'] });
      });
      const bar = progress('build', new Mapping(model.config.mapping, world.rank).ppLayers(model.config.num_hidden_layers).length, 'layers');
      // Held by this command's bundle, loaded only here: build() would load it from its ES module otherwise,
      // with a second copy of every module it shares with the bundle (engine/linear.ts loadQuantLinear).
      if (algo || (a['lm-head-quant'] ?? 'none') !== 'none') setQuantLinear(await import('../quantization/onnx-linear.js'));
      const engine = await traceSpan('build', () => build(model, { ...buildConfig, device }, { onLayer: () => bar.tick() }));
      bar.done();
      await traceSpan('save', () => engine.save(out, world.size > 1 ? world : undefined, world.rank === 0 && hasTokenizer(tokDir) ? tokenizerFiles(tokDir) : {}, guard));
      if (world.rank === 0) {
        process.stdout.write(`built ${out}: ${tp * pp} rank(s)${pp > 1 ? ` (tp ${tp} × pp ${pp})` : ''}, ${engine.config.segments} segment(s) per rank, ${a.dtype}, ${(performance.now() - t0).toFixed(0)} ms\n`);
        if (!hasTokenizer(tokDir)) process.stderr.write(`tprun: note: ${tokDir} has no tokenizer.json; give generate --tokenizer DIR (or build with --tokenizer)\n`);
      }
    }, a);
  }),
};
export default command;

/** LlamaForCausalLM.checkCheckpoint; an error that names no file of `dir` (tp_size against the heads, say) is put on its config.json, where those values come from. */
function checkCheckpoint(dir: string): PretrainedConfig {
  try {
    return LlamaForCausalLM.checkCheckpoint(dir);
  } catch (e) {
    if (!isInputError(e) || e.message.includes(dir)) throw e;
    throw new InputError(`${join(dir, 'config.json')}: ${e.message}`);
  }
}

function checkpointMapping(dir: string): { tp: number; pp: number; weightOnly: boolean; algo: string | null } {
  const f = join(dir, 'config.json');
  if (!existsSync(f)) throw new InputError(`${f}: missing (not a TensorRT-LLM checkpoint)`);
  let m: { tp_size?: number; pp_size?: number } | undefined;
  let algo: string | undefined;
  try {
    const c = JSON.parse(readFileSync(f, 'utf8'));
    m = c.mapping;
    algo = c.quantization?.quant_algo;
  } catch (e) {
    throw new InputError(`${f}: ${(e as Error).message}`);
  }
  const tp = m?.tp_size ?? 1;
  const pp = m?.pp_size ?? 1;
  if (!Number.isInteger(tp) || tp < 1 || !Number.isInteger(pp) || pp < 1) throw new InputError(`${f}: mapping tp_size ${tp} / pp_size ${pp}: must be positive integers`);
  return { tp, pp, weightOnly: weightOnlyBits(algo) !== undefined, algo: algo ?? null };
}
