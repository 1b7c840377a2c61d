// `tprun convert --model DIR --tp N [--pp P] [--dtype ...] [--format auto|hf|meta|tllm] --out DIR`
// Alone, this process writes every rank's shard; inside a world (tprun -n, mpirun, srun) each rank
// converts its own. Quantization always runs on ranks (rank 0 calibrates and sends the shards).
import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
// The conversion code is loaded in the handler: every tprun command pays for what this module imports.
import type { ConvertOptions, RankStats } from '../checkpoint/convert.js';
import { isInputError } from '../core/errors.js';
import { STATS_ENV } from '../checkpoint/stats-env.js';
import type { World } from '../rank/types.js';
import { detectIdentity, joinsWorld } from '../rank/identity.js';
import { quantOptions, quantRequestFrom } from '../quantization/cli-options.js';

interface Args {
  model: string;
  tp: number;
  pp: number;
  dtype?: 'float32' | 'float16' | 'bfloat16';
  format: 'auto' | 'hf' | 'meta' | 'tllm';
  out: string;
  clamp: boolean;
  'parallel-embedding': boolean;
  'embedding-sharding-dim': 0 | 1;
  force: boolean;
}

const convert: CommandModule<object, Args> = {
  command: 'convert',
  describe: 'convert a Hugging Face / Meta / TensorRT-LLM LLaMA into a tensor-parallel TensorRT-LLM checkpoint',
  builder: (y) => quantOptions(y)
    .option('model', { type: 'string', alias: 'model_dir', demandOption: true, describe: 'source checkpoint directory' })
    .option('tp', { type: 'number', alias: 'tp_size', default: 1, describe: 'tensor-parallel size (ranks)' })
    .option('pp', { type: 'number', alias: 'pp_size', default: 1, describe: 'pipeline-parallel size (stages of whole layers); the job has tp × pp ranks' })
    .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, describe: 'weight dtype (default: the source\'s)' })
    .option('format', { choices: ['auto', 'hf', 'meta', 'tllm'] as const, default: 'auto' as const, describe: 'source layout; tllm reshards a TensorRT-LLM checkpoint to --tp' })
    .option('out', { type: 'string', alias: 'output_dir', default: 'tllm_checkpoint', describe: 'output directory (written atomically; an existing one is replaced only if empty or written by tprun)' })
    .option('force', { type: 'boolean', default: false, describe: 'also replace an existing --out that tprun did not write (never the current directory, home or the input)' })
    .option('clamp', { type: 'boolean', default: false, describe: 'saturate values beyond float16\'s range instead of failing' })
    .option('parallel-embedding', { type: 'boolean', default: false, describe: 'shard the embedding table instead of replicating it' })
    .option('embedding-sharding-dim', { choices: [0, 1] as const, default: 0 as const, describe: 'with --parallel-embedding: split the vocabulary (0) or the hidden size (1)' }) as any,
  handler: async (a) => {
    const o: ConvertOptions = {
      model: a.model, out: a.out, tp: a.tp, pp: a.pp, dtype: a.dtype, format: a.format, clamp: a.clamp,
      useParallelEmbedding: a['parallel-embedding'], embeddingShardingDim: a['embedding-sharding-dim'], force: a.force,
    };
    try {
      const { convertLocal, convertRank, validateConvert } = await import('../checkpoint/convert.js');
      const id = detectIdentity();
      const n = o.tp * (o.pp ?? 1);
      const q = quantRequestFrom(a as never);
      // Calibration runs an engine (EngineRunner.load reads it): refused here, before the model is read.
      if (q) (await import('../engine/device.js')).webgpuEpOptions();
      const writeStats = (stats: Omit<RankStats, 'bytesRead' | 'pid'> & { bytesRead?: number }) => {
        const dir = process.env[STATS_ENV];
        if (dir) fs.writeFileSync(path.join(dir, `rank${stats.rank}.json`), JSON.stringify({ pid: process.pid, ...stats }));
      };
      // Bad input is reported once, here, before any rank starts.
      if (!joinsWorld(n, id)) validateConvert(o);
      // Alone (not started as ranks of a world, or in a one-task allocation that runDistributed would
      // start ranks from): every rank's file is written by this process, no rank processes at all.
      // Quantization keeps its ranks: rank 0 alone calibrates and sends the others their shards.
      const alone = !id.inWorld || (id.size === 1 && (n === 1 || id.source !== 'tprun'));
      if (alone && !q) {
        for (const stats of await convertLocal(o)) writeStats(stats);
        return;
      }
      const { runDistributed } = await import('../launcher/self-launch.js');
      await runDistributed(n, async (world: World) => {
        writeStats(q ? await (await import('../quantization/distribute.js')).convertQuantized(world, o, q) : await convertRank(world, o));
      });
    } catch (e: any) {
      // A failed rank already printed its own one-line error; the launcher reported which rank it was.
      if (e?.reported) { process.exitCode = e.exitCode ?? 1; return; }
      process.stderr.write(`tprun convert: ${isInputError(e) ? e.message : e?.message ?? String(e)}\n`);
      process.exitCode = isInputError(e) ? 2 : typeof e?.exitCode === 'number' ? e.exitCode : 1;
    }
  },
};
export default convert;
