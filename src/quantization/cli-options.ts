// `--quant ...` options shared by `tprun convert` and `tprun build --model` (one definition, two commands).

import type { Argv } from 'yargs';
import { fileURLToPath } from 'node:url';
import { QUANT_ALGOS, type QuantAlgo, type QuantRequest } from './algorithms.js';

export type { QuantRequest };

export const DEFAULT_CALIB_FILE = 'data/brown-calib.txt';

export interface QuantArgs {
  quant?: string;
  qformat?: string;
  use_weight_only?: boolean;
  weight_only_precision?: string;
  smoothquant?: number;
  per_token?: boolean;
  per_channel?: boolean;
  int8_kv_cache?: boolean;
  kv_cache_dtype?: string;
  'group-size': number;
  'kv-cache'?: string;
  calib?: string;
  'calib-samples': number;
  'smooth-alpha': number;
  'sq-activations': string;
}

export function quantOptions<T>(y: Argv<T>): Argv<T & QuantArgs> {
  return y
    .option('quant', {
      type: 'string',
      choices: QUANT_ALGOS as unknown as string[],
      describe: 'quantize on rank 0: int8_wo (W8A16), int4_wo (group-wise int4, W4A16_AWQ layout), int4_awq (W4A16_AWQ), w4a8_awq (W4A8_AWQ), w8a8_sq (SmoothQuant), w8a8 (no smoothing), fp8 (FP8); docs/quantization.md',
    })
    .option('group-size', { type: 'number', default: 128, alias: ['awq_block_size', 'group_size'], describe: 'int4 group size along the input features' })
    // The spellings TensorRT-LLM users know (examples/quantization/quantize.py, examples/*/convert_checkpoint.py),
    // hidden: docs/quantization.md maps each to --quant / --kv-cache.
    .option('qformat', { type: 'string', hidden: true, choices: Object.keys(QFORMAT) })
    .option('use_weight_only', { type: 'boolean', hidden: true })
    .option('weight_only_precision', { type: 'string', hidden: true, choices: ['int8', 'int4', 'int4_gptq'] })
    .option('smoothquant', { type: 'number', hidden: true })
    .option('per_token', { type: 'boolean', hidden: true })
    .option('per_channel', { type: 'boolean', hidden: true })
    .option('int8_kv_cache', { type: 'boolean', hidden: true })
    .option('kv_cache_dtype', { type: 'string', hidden: true, choices: ['int8', 'fp8'] })
    .option('kv-cache', { type: 'string', choices: ['int8'], describe: 'quantize the KV cache (INT8, calibrated scale)' })
    .option('calib', { type: 'string', describe: `calibration text, one sample per line (default: the bundled ${DEFAULT_CALIB_FILE})` })
    .option('calib-samples', { type: 'number', default: 128, describe: 'calibration lines used' })
    .option('smooth-alpha', { type: 'number', default: 0.5, describe: 'SmoothQuant migration strength α' })
    .option('sq-activations', { type: 'string', choices: ['per-token', 'per-tensor'], default: 'per-token', describe: 'SmoothQuant activation scales: dynamic per token or static per tensor' })
    .check((a) => {
      const t = fromTllmSpellings(a as Partial<QuantArgs>);
      if (t.algo && a.quant && t.algo !== a.quant) throw new Error(`--quant ${a.quant} and ${t.flag} ask for different schemes`);
      if ((a.quant || a['kv-cache'] || t.algo || t.kv) && (a as { checkpoint?: string }).checkpoint) {
        throw new Error('--quant/--kv-cache quantize a --model; a checkpoint keeps the quantization it was converted with');
      }
      const g = a['group-size'];
      if (!Number.isInteger(g) || g < 16 || (g & (g - 1)) !== 0) throw new Error(`--group-size ${g}: must be a power of two ≥ 16 (MatMulNBits block size)`);
      if (!Number.isInteger(a['calib-samples']) || a['calib-samples'] < 1) throw new Error(`--calib-samples ${a['calib-samples']}: must be a positive integer`);
      const al = a['smooth-alpha'];
      if (!(al >= 0 && al <= 1)) throw new Error(`--smooth-alpha ${al}: must lie in [0, 1]`);
      return true;
    }) as unknown as Argv<T & QuantArgs>;
}

/** ModelOpt / TensorRT-LLM quantize.py --qformat → tprun --quant (int8_sq is ModelOpt's per-tensor SmoothQuant). */
const QFORMAT: Record<string, { algo?: QuantAlgo; sq?: 'per-tensor' }> = {
  full_prec: {}, int8_wo: { algo: 'int8_wo' }, int4_wo: { algo: 'int4_wo' }, int4_awq: { algo: 'int4_awq' },
  w4a8_awq: { algo: 'w4a8_awq' }, int8_sq: { algo: 'w8a8_sq', sq: 'per-tensor' }, fp8: { algo: 'fp8' },
};

/** What TensorRT-LLM's flags ask for; throws (exit 2) for the ones naming a scheme tprun does not run. */
function fromTllmSpellings(a: Partial<QuantArgs>): { algo?: QuantAlgo; sq?: 'per-token' | 'per-tensor'; alpha?: number; kv?: 'int8'; flag?: string } {
  const out: ReturnType<typeof fromTllmSpellings> = {};
  if (a.qformat) Object.assign(out, QFORMAT[a.qformat], { flag: `--qformat ${a.qformat}` });
  if (a.weight_only_precision && !a.use_weight_only) throw new Error('--weight_only_precision needs --use_weight_only');
  if (a.use_weight_only) {
    const p = a.weight_only_precision ?? 'int8';
    if (p === 'int4_gptq') throw new Error('--weight_only_precision int4_gptq: W4A16_GPTQ checkpoints need GPU-architecture-specific weights; tprun does not write them (use --quant int4_awq)');
    Object.assign(out, { algo: p === 'int4' ? 'int4_wo' : 'int8_wo', flag: `--use_weight_only --weight_only_precision ${p}` });
  }
  if (a.smoothquant !== undefined) {
    // convert_checkpoint.py: --smoothquant α [--per_channel] [--per_token]; without --per_channel the
    // weights are per tensor (W8A8_SQ_PER_TENSOR_*), which tprun does not run.
    if (!a.per_channel) throw new Error('--smoothquant without --per_channel (per-tensor int8 weights) is not a scheme tprun runs: add --per_channel');
    Object.assign(out, { algo: 'w8a8_sq', sq: a.per_token ? 'per-token' : 'per-tensor', alpha: a.smoothquant, flag: '--smoothquant' });
  }
  if (a.kv_cache_dtype === 'fp8') throw new Error('--kv_cache_dtype fp8: an FP8 KV cache is not a scheme tprun runs (int8 is)');
  if (a.kv_cache_dtype === 'int8' || a.int8_kv_cache) out.kv = 'int8';
  return out;
}

/** The parsed options as the library takes them; undefined when nothing is to be quantized. */
export function quantRequestFrom(a: Partial<QuantArgs>): QuantRequest | undefined {
  const t = fromTllmSpellings(a);
  const algo = (a.quant as QuantAlgo | undefined) ?? t.algo;
  const kv = a['kv-cache'] === 'int8' || t.kv === 'int8' ? 'int8' : undefined;
  if (!algo && !kv) return undefined;
  return {
    algo,
    groupSize: a['group-size'] ?? 128,
    kvCache: kv,
    smoothAlpha: t.alpha ?? a['smooth-alpha'] ?? 0.5,
    sqActivations: t.sq ?? (a['sq-activations'] as 'per-token' | 'per-tensor') ?? 'per-token',
    calibFile: a.calib ?? defaultCalibFile(),
    calibSamples: a['calib-samples'] ?? 128,
  };
}

export function defaultCalibFile(): string {
  return fileURLToPath(new URL(`../../${DEFAULT_CALIB_FILE}`, import.meta.url));
}
