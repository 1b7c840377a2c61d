// `tprun gen-checkpoint --preset tinyllama-1.1b --out DIR`: a LLaMA-shaped checkpoint of random weights.
import type { CommandModule } from 'yargs';
import { isInputError } from '../core/errors.js';

interface Args {
  preset: string; out: string; format: 'hf' | 'meta'; dtype: 'float32' | 'float16' | 'bfloat16';
  layers?: number; mp: number; 'shard-size': number; seed: number; 'config-style': 4 | 5; force: boolean;
}

const gen: CommandModule<object, Args> = {
  command: 'gen-checkpoint',
  describe: 'write a synthetic LLaMA-shaped checkpoint (HF safetensors or Meta .pth) of a preset',
  builder: (y) => y
    .option('preset', { type: 'string', demandOption: true, describe: 'brown, tinyllama-1.1b, llama-2-7b, llama-3-8b, llama-3.2-1b' })
    .option('out', { type: 'string', demandOption: true })
    .option('format', { choices: ['hf', 'meta'] as const, default: 'hf' as const })
    .option('dtype', { choices: ['float32', 'float16', 'bfloat16'] as const, default: 'bfloat16' as const })
    .option('layers', { type: 'number', describe: 'override the number of layers' })
    .option('mp', { type: 'number', default: 1, describe: 'model-parallel files (Meta format)' })
    .option('shard-size', { type: 'number', default: 2000, describe: 'max MB per safetensors shard (HF format)' })
    .option('seed', { type: 'number', default: 0 })
    .option('force', { type: 'boolean', default: false, describe: 'replace an existing --out that tprun did not write (never the current directory or home)' })
    .option('config-style', { choices: [4, 5] as const, default: 5 as const, describe: 'transformers 4 or 5 config keys' }) as any,
  handler: async (a) => {
    try {
      const { generateCheckpoint } = await import('../checkpoint/generate.js');
      const t0 = performance.now();
      const r = generateCheckpoint({
        preset: a.preset, out: a.out, format: a.format, dtype: a.dtype, layers: a.layers, mp: a.mp,
        shardBytes: a['shard-size'] * 1e6, seed: a.seed, configStyle: a['config-style'], force: a.force,
      });
      process.stdout.write(JSON.stringify({ out: a.out, bytes: r.bytes, seconds: (performance.now() - t0) / 1000 }) + '\n');
    } catch (e: any) {
      process.stderr.write(`tprun gen-checkpoint: ${e?.message ?? e}\n`);
      process.exitCode = isInputError(e) ? 2 : 1;
    }
  },
};
export default gen;
