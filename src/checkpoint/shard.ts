// One rank's conversion: plan which slices of which full tensors it holds (from the sharding table),
// then produce them one at a time, cast to the target dtype. Used in memory (LlamaForCausalLM) and
// streamed to rank{r}.safetensors (tprun convert), so both paths give identical tensors.
import type { DType, Tensor } from '../core/tensor.js';
import type { PretrainedConfig } from '../core/config.js';
import { FLOAT_DTYPES, ITEMSIZE, byteSize, castTensor } from '../core/dtype.js';
import { BufferPool, type TensorSource, rawSelectionCols, rawSelectionRows, readSelection, readSelectionRows } from './source.js';
import { type ColumnCut, mappedColumnsAvailable } from './mapped-cols.js';
import { kernelCopyAvailable } from './kernel-copy.js';
import type { RawRange } from './ranged.js';
import { ioStats } from './ranged.js';
import { type Selection, type ShardContext, checkHeads, contextFromConfig, ruleFor, selection, shardShape } from '../sharding/rules.js';
import { InputError } from '../core/errors.js';
import { checkMapping, ppLayerRange, stageTensors } from '../sharding/mapping.js';
import { MODEL_DTYPE_ROLES } from '../sharding/tllm-layout.js';

export interface PlanEntry {
  name: string;
  sel: Selection;
  /** dtype and shape of the rank's tensor as written. */
  dtype: DType;
  shape: number[];
}

/**
 * Float `.weight` tensors take the model dtype, and so do the quantized companions TensorRT-LLM declares in
 * the model dtype (prequant_scaling_factor, scale_to_int); other quantized tensors and scales keep theirs.
 */
export function outDtype(name: string, src: DType, target: DType): DType {
  const role = name.slice(name.lastIndexOf('.') + 1);
  return (name.endsWith('.weight') || MODEL_DTYPE_ROLES.has(role)) && FLOAT_DTYPES.has(src) ? target : src;
}

export function shardContext(config: PretrainedConfig): ShardContext {
  const ctx = contextFromConfig(config);
  checkMapping(config.mapping, config.num_hidden_layers);
  checkHeads(ctx);
  return ctx;
}

/**
 * What rank `rank` of a pipeline stage sees of a full-model source: only its stage's tensors, under the
 * names its rank file uses (layers renumbered from 0; see sharding/mapping.ts). The source itself at pp 1.
 */
export function rankSource(src: TensorSource, config: PretrainedConfig, rank: number): TensorSource {
  const { tp_size: tp, pp_size: pp } = config.mapping;
  if (pp === 1) return src;
  const pairs = stageTensors(src.names(), config.num_hidden_layers, pp, Math.floor(rank / tp));
  const toGlobal = new Map(pairs);
  const g = (name: string) => {
    const n = toGlobal.get(name);
    if (!n) throw new InputError(`${src.where}: stage ${Math.floor(rank / tp)} has no tensor ${name}`);
    return n;
  };
  const { first, count } = ppLayerRange(config.num_hidden_layers, pp, Math.floor(rank / tp));
  return {
    where: `${src.where} (layers ${first}..${first + count - 1})`,
    names: () => pairs.map(([l]) => l),
    has: (name) => toGlobal.has(name),
    info: (name) => src.info(g(name)),
    readRows: (name, start, end, dest, destOff) => src.readRows(g(name), start, end, dest, destOff),
    readCols: (name, start, end, rows) => src.readCols(g(name), start, end, rows),
    fileRows: src.fileRows ? (name, start, end) => src.fileRows!(g(name), start, end) : undefined,
    close: () => src.close(),
  };
}

/** Rank `rank`'s plan over `src` (as rankSource gives it at pp > 1): its stage's tensors, cut for its tp rank. */
export function planRank(src: TensorSource, config: PretrainedConfig, rank: number, names = src.names()): PlanEntry[] {
  const ctx = shardContext(config);
  const world = config.mapping.world_size;
  if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new InputError(`rank ${rank} is outside world_size=${world}`);
  const tpRank = rank % ctx.tp;
  return names.map((name) => {
    const m = src.info(name);
    const sel = selection(ruleFor(name, m.shape.length, ctx), m.shape, ctx, tpRank);
    return { name, sel, dtype: outDtype(name, m.dtype, config.dtype), shape: shardShape(m.shape, sel) };
  });
}

export interface ProduceOptions {
  /** Saturate values beyond float16's range instead of failing. */
  clamp?: boolean;
  /** Reuse one buffer for every tensor: each must be consumed before the next is produced. */
  reuseBuffer?: boolean;
}

/**
 * Bytes of output per chunk when streaming: small enough that a chunk is still in the cache when it is
 * written (the write's copy into the page cache from a cold buffer dominated: 16 MiB chunks cost 3.2 s
 * of kernel time converting the 1.1B shape at tp 2 on the 2-core machine, 512 KiB chunks 1.0-1.4 s).
 */
export const CHUNK_BYTES = 512 << 10;

/** Bytes per chunk copied inside the kernel (no user-space buffer to keep in cache: fewer, larger calls). */
const COPY_BYTES = 8 << 20;

/**
 * Streams the planned tensors in chunks of rows (about CHUNK_BYTES each) into `write(name, data,
 * offsetInTensor)`, with one chunk in flight: while chunk i is written (asynchronously, on the thread
 * pool) chunk i+1 is read into the other of two reused buffers. Memory stays at two chunks whatever
 * the tensor sizes.
 */
export async function pipeShards(src: TensorSource, plan: PlanEntry[],
  write: (name: string, data: Uint8Array, offset: number) => Promise<void>,
  opts: ProduceOptions & {
    onTensor?: (name: string, bytes: number) => void;
    chunkBytes?: number;
    /** Checked before each chunk: set, the stream stops (with an error) at the next one. */
    signal?: { aborted: boolean };
    /** Checkpoint bytes read for each chunk (reads are synchronous: the global counter's delta). */
    onRead?: (bytes: number) => void;
    /**
     * Writes a chunk by copying it from the source's files (synchronously): taken for chunks that need
     * no cast and lie in the files as they are (kernel-copy.ts), where the kernel can copy at all.
     */
    copy?: (name: string, ranges: RawRange[], offset: number) => unknown;
    /** Like copy, but returns at once: the chunk's copy settles later (bytes read: its result), while
     *  the caller's thread goes on; the next chunk of this stream waits for it. Taken over `copy`. */
    copyAsync?: (name: string, ranges: RawRange[], offset: number) => Promise<number>;
    /** Writes a chunk of a column cut from the rows it is cut from (synchronously: mapped-cols.ts), for
     *  chunks that need no cast, where the source's rows lie in its files as they are. */
    copyCols?: (name: string, cuts: ColumnCut[], offset: number) => unknown;
    /** copyCols that returns at once, as copyAsync is to copy (settles with the bytes read). */
    copyColsAsync?: (name: string, cuts: ColumnCut[], offset: number) => Promise<number>;
  } = {}): Promise<void> {
  const pools = [new BufferPool(), new BufferPool()];
  let flip = 0;
  let pending: Promise<void> | undefined;
  try {
    for (const e of plan) {
      const m = src.info(e.name);
      const rows = e.shape.length ? e.shape[0] : 1;
      const inRow = byteSize(m.dtype, e.shape.slice(1));
      const outRow = byteSize(e.dtype, e.shape.slice(1));
      // Chunks that are bytes of the source files as they are go file to file inside the kernel.
      const direct = (opts.copy !== undefined || opts.copyAsync !== undefined) && m.dtype === e.dtype && rows * outRow > 0 && kernelCopyAvailable() && rawSelectionRows(src, e.name, e.sel, 0, 1) !== undefined;
      const cols = !direct && (opts.copyCols !== undefined || opts.copyColsAsync !== undefined) && m.dtype === e.dtype && rows * outRow > 0 && mappedColumnsAvailable() && rawSelectionCols(src, e.name, e.sel, 0, 1) !== undefined;
      const step = Math.max(1, Math.floor((direct || cols ? COPY_BYTES : opts.chunkBytes ?? CHUNK_BYTES) / Math.max(inRow, outRow, 1)));
      if (rows * outRow === 0) {
        await pending;
        pending = write(e.name, new Uint8Array(0), 0);
      }
      for (let r0 = 0; r0 < rows; r0 += step) {
        const r1 = Math.min(rows, r0 + step);
        if (opts.signal?.aborted) throw new Error('stopped: another rank of this process failed');
        // Whole rows as kernel copies from the source file, else column cuts written from a mapping of it;
        // each on libuv's pool where the caller gives that form (several ranks' copies then overlap).
        const ranges = direct ? rawSelectionRows(src, e.name, e.sel, r0, r1) : undefined;
        const cuts = !ranges && cols ? rawSelectionCols(src, e.name, e.sel, r0, r1) : undefined;
        if (ranges || cuts) {
          await pending;
          pending = undefined;
          const off = r0 * outRow;
          const pooled = ranges ? opts.copyAsync?.(e.name, ranges, off) : opts.copyColsAsync?.(e.name, cuts!, off);
          if (pooled) {
            pending = pooled.then((n) => { opts.onRead?.(n); });
            continue;
          }
          const read0 = ioStats.bytesRead;
          if (ranges) opts.copy!(e.name, ranges, off);
          else opts.copyCols!(e.name, cuts!, off);
          opts.onRead?.(ioStats.bytesRead - read0);
          continue;
        }
        const buf = pools[flip ^= 1].take((r1 - r0) * inRow);
        const read0 = ioStats.bytesRead;
        readSelectionRows(src, e.name, e.sel, r0, r1, buf);
        opts.onRead?.(ioStats.bytesRead - read0);
        const chunkShape = e.shape.length ? [r1 - r0, ...e.shape.slice(1)] : [];
        const t = castTensor({ dtype: m.dtype, shape: chunkShape, data: buf }, e.dtype, { clamp: opts.clamp, what: `${src.where}: tensor ${e.name}`, indexBase: r0 * (outRow / ITEMSIZE[e.dtype]) });
        await pending;
        pending = write(e.name, t.data, r0 * outRow);
      }
      opts.onTensor?.(e.name, rows * outRow);
    }
    await pending;
  } catch (err) {
    await pending?.catch(() => {});
    throw err;
  }
}

/** Produces the planned tensors one by one (only one is alive at a time if the consumer drops it). */
export function* produceShards(src: TensorSource, plan: PlanEntry[], opts: ProduceOptions = {}): Generator<[string, Tensor]> {
  const pool = opts.reuseBuffer ? new BufferPool() : undefined;
  for (const e of plan) {
    const t = readSelection(src, e.name, e.sel, pool);
    yield [e.name, castTensor(t, e.dtype, { clamp: opts.clamp, what: `${src.where}: tensor ${e.name}` })];
  }
}
