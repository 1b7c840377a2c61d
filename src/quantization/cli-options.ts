// `--quant ...` options shared by `tprun convert` and `tprun build --model` (one definition, two commands).

import type { Argv } from 'yargs';
import { QUANT_ALGOS, type QuantAlgo, type QuantRequest } from './algorithms.js';

export type { QuantRequest };

export const DEFAULT_CALIB_FILE = 'data/brown-calib.txt';

export interface QuantArgs {
  quant?: string;
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
      describe: 'quantize on rank 0: int8_wo (W8A16), int4_wo (W4A16), int4_awq (W4A16_AWQ), w8a8_sq (SmoothQuant), w8a8 (no smoothing), fp8 (FP8)',
    })
    .option('group-size', { type: 'number', default: 128, describe: 'int4 group size along the input features' })
    .option('kv-cache', { type: 'string', choices: ['int8'], describe: 'quantize the KV cache (INT8, calibrated scale)' })
    .option('calib', { type: 'string', describe: `calibration text, one sample per line (default: the bundled ${DEFAULT_CALIB_FILE})` })
    .option('calib-samples', { type: 'number', default: 128, describe: 'calibration lines used' })
    .option('smooth-alpha', { type: 'number', default: 0.5, describe: 'SmoothQuant migration strength α' })
    .option('sq-activations', { type: 'string', choices: ['per-token', 'per-tensor'], default: 'per-token', describe: 'SmoothQuant activation scales: dynamic per token or static per tensor' })
    .check((a) => {
      if ((a.quant || a['kv-cache']) && (a as { checkpoint?: string }).checkpoint) {
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

/** The parsed options as the library takes them; undefined when nothing is to be quantized. */
export function quantRequestFrom(a: Partial<QuantArgs>): QuantRequest | undefined {
  if (!a.quant && !a['kv-cache']) return undefined;
  return {
    algo: a.quant as QuantAlgo | undefined,
    groupSize: a['group-size'] ?? 128,
    kvCache: a['kv-cache'] === 'int8' ? 'int8' : undefined,
    smoothAlpha: a['smooth-alpha'] ?? 0.5,
    sqActivations: (a['sq-activations'] as 'per-token' | 'per-tensor') ?? 'per-token',
    calibFile: a.calib ?? defaultCalibFile(),
    calibSamples: a['calib-samples'] ?? 128,
  };
}

export function defaultCalibFile(): string {
  return new URL(`../../${DEFAULT_CALIB_FILE}`, import.meta.url).pathname;
}
