// One rank's conversion: plan which slices of which full tensors it holds (from the sharding table),
// then produce them one at a time, cast to the target dtype. Used in memory (LlamaForCausalLM) and
// streamed to rank{r}.safetensors (tprun convert), so both paths give identical tensors.
import type { DType, Tensor } from './tensor.js';
import type { PretrainedConfig } from '../model/config.js';
import { FLOAT_DTYPES, castTensor } from './dtype.js';
import { BufferPool, type TensorSource, readSelection } from './source.js';
import { type Selection, type ShardContext, checkHeads, contextFromConfig, ruleFor, selection, shardShape } from '../sharding/rules.js';
import { InputError } from './errors.js';

export interface PlanEntry {
  name: string;
  sel: Selection;
  /** dtype and shape of the rank's tensor as written. */
  dtype: DType;
  shape: number[];
}

/** Float `.weight` tensors take the model dtype; quantized weights and scale tensors keep theirs. */
export function outDtype(name: string, src: DType, target: DType): DType {
  return name.endsWith('.weight') && FLOAT_DTYPES.has(src) ? target : src;
}

export function shardContext(config: PretrainedConfig): ShardContext {
  const ctx = contextFromConfig(config);
  if (config.mapping.pp_size !== 1) throw new InputError(`--pp ${config.mapping.pp_size}: pipeline parallelism is not supported (use --pp 1)`);
  if (config.mapping.world_size !== config.mapping.tp_size * config.mapping.pp_size) {
    throw new InputError(`mapping: world_size ${config.mapping.world_size} != tp_size ${config.mapping.tp_size} × pp_size ${config.mapping.pp_size}`);
  }
  if (!Number.isInteger(ctx.tp) || ctx.tp < 1) throw new InputError(`--tp ${ctx.tp}: must be a positive integer`);
  checkHeads(ctx);
  return ctx;
}

export function planRank(src: TensorSource, config: PretrainedConfig, rank: number, names = src.names()): PlanEntry[] {
  const ctx = shardContext(config);
  if (!Number.isInteger(rank) || rank < 0 || rank >= ctx.tp) throw new InputError(`rank ${rank} is outside tp=${ctx.tp}`);
  return names.map((name) => {
    const m = src.info(name);
    const sel = selection(ruleFor(name, m.shape.length, ctx), m.shape, ctx, rank);
    return { name, sel, dtype: outDtype(name, m.dtype, config.dtype), shape: shardShape(m.shape, sel) };
  });
}

export interface ProduceOptions {
  /** Saturate values beyond float16's range instead of failing. */
  clamp?: boolean;
  /** Reuse one buffer for every tensor: each must be consumed before the next is produced. */
  reuseBuffer?: boolean;
}

/** Produces the planned tensors one by one (only one is alive at a time if the consumer drops it). */
export function* produceShards(src: TensorSource, plan: PlanEntry[], opts: ProduceOptions = {}): Generator<[string, Tensor]> {
  const pool = opts.reuseBuffer ? new BufferPool() : undefined;
  for (const e of plan) {
    const t = readSelection(src, e.name, e.sel, pool);
    yield [e.name, castTensor(t, e.dtype, { clamp: opts.clamp, what: `${src.where}: tensor ${e.name}` })];
  }
}
