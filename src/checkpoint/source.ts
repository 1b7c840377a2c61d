// A TensorSource is a model's full (unsharded) tensors under some naming, readable by row or column
// ranges without loading whole tensors. Loaders (HF, Meta, TensorRT-LLM) provide one; `readSelection`
// turns a sharding Selection into exactly the reads a rank needs.
import type { DType, Tensor, Weights } from '../core/tensor.js';
import { ITEMSIZE, byteSize, numel } from '../core/dtype.js';
import { InputError } from '../core/errors.js';
import type { Selection } from '../sharding/rules.js';
import { shardShape } from '../sharding/rules.js';
import { copyAxis } from '../sharding/slice.js';
import type { RawRange } from './ranged.js';
import type { ColumnCut } from './mapped-cols.js';

export interface TensorMeta {
  dtype: DType;
  shape: number[];
}

export interface TensorSource {
  /** Where the tensors come from, for error messages. */
  readonly where: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorMeta;
  /** Rows [start, end) of dim 0 into dest at destOff (a 0-D tensor has one row). */
  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void;
  /**
   * Columns [start, end) of dim 1, of every row (or of rows [r0, r1)), as one contiguous block. A source
   * may read it into `dest` (exactly the block's size) and return that; callers copy when it did not.
   */
  readCols(name: string, start: number, end: number, rows?: readonly [number, number], dest?: Uint8Array): Uint8Array;
  /**
   * Where rows [start, end) of dim 0 lie in open files, in order, when they are stored as they are read
   * (a source that permutes, merges or decodes them has no such ranges): they can then be copied inside
   * the kernel (kernel-copy.ts).
   */
  fileRows?(name: string, start: number, end: number): RawRange[] | undefined;
  close(): void;
}

export function rowsOf(shape: readonly number[]): number {
  return shape.length ? shape[0] : 1;
}

export function rowBytes(m: TensorMeta): number {
  return byteSize(m.dtype, m.shape.slice(1));
}

/**
 * A growable scratch buffer: a streaming consumer that is done with each tensor before asking for the
 * next can reuse one allocation instead of faulting in fresh pages for every tensor.
 */
export class BufferPool {
  private buf = new Uint8Array(0);
  take(n: number): Uint8Array {
    if (this.buf.length < n) this.buf = new Uint8Array(Math.max(n, Math.floor(this.buf.length * 1.25)));
    return this.buf.subarray(0, n);
  }
}

/** Reads the shard described by `sel` of tensor `name` (into `pool`'s buffer when given). */
export function readSelection(src: TensorSource, name: string, sel: Selection, pool?: BufferPool): Tensor {
  const m = src.info(name);
  const shape = shardShape(m.shape, sel);
  const alloc = (n: number) => (pool ? pool.take(n) : new Uint8Array(n));
  if (sel.axis < 0) {
    const data = alloc(byteSize(m.dtype, m.shape));
    src.readRows(name, 0, rowsOf(m.shape), data, 0);
    return { dtype: m.dtype, shape, data };
  }
  if (sel.axis === 0) {
    const data = alloc(byteSize(m.dtype, shape));
    const rb = rowBytes(m);
    let at = 0;
    for (const p of sel.pieces) {
      if ('zeros' in p) {
        if (pool) data.fill(0, at * rb, (at + p.zeros) * rb);
        at += p.zeros;
        continue;
      }
      src.readRows(name, p.start, p.end, data, at * rb);
      at += p.end - p.start;
    }
    return { dtype: m.dtype, shape, data };
  }
  if (sel.axis !== 1) throw new Error(`tensor ${name}: cannot cut axis ${sel.axis}`);
  const data = new Uint8Array(byteSize(m.dtype, shape));
  let at = 0;
  for (const p of sel.pieces) {
    if ('zeros' in p) { at += p.zeros; continue; }
    const block = src.readCols(name, p.start, p.end);
    if (sel.pieces.length === 1) return { dtype: m.dtype, shape, data: block };
    const bshape = [...m.shape];
    bshape[1] = p.end - p.start;
    copyAxis(block, bshape, 0, data, shape, at, 1, p.end - p.start, ITEMSIZE[m.dtype]);
    at += p.end - p.start;
  }
  return { dtype: m.dtype, shape, data };
}

/**
 * Rows [r0, r1) (along dim 0) of the shard described by `sel`, into `dest` from offset 0: lets a
 * streaming consumer hold a bounded chunk instead of a whole tensor.
 */
export function readSelectionRows(src: TensorSource, name: string, sel: Selection, r0: number, r1: number, dest: Uint8Array): void {
  const m = src.info(name);
  const shape = shardShape(m.shape, sel);
  const rb = byteSize(m.dtype, shape.slice(1));
  if (sel.axis < 0) return src.readRows(name, r0, r1, dest, 0);
  if (sel.axis === 0) {
    let at = 0;
    for (const p of sel.pieces) {
      const len = 'zeros' in p ? p.zeros : p.end - p.start;
      const s = Math.max(r0, at), e = Math.min(r1, at + len);
      if (e > s) {
        if ('zeros' in p) dest.fill(0, (s - r0) * rb, (e - r0) * rb);
        else src.readRows(name, p.start + (s - at), p.start + (e - at), dest, (s - r0) * rb);
      }
      at += len;
    }
    return;
  }
  if (sel.axis !== 1) throw new Error(`tensor ${name}: cannot cut axis ${sel.axis}`);
  const cshape = [r1 - r0, ...shape.slice(1)];
  let at = 0;
  for (const p of sel.pieces) {
    if ('zeros' in p) {
      const z = new Uint8Array(byteSize(m.dtype, [r1 - r0, p.zeros, ...shape.slice(2)]));
      copyAxis(z, [r1 - r0, p.zeros, ...shape.slice(2)], 0, dest, cshape, at, 1, p.zeros, ITEMSIZE[m.dtype]);
      at += p.zeros;
      continue;
    }
    if (sel.pieces.length === 1) {
      // Straight into the caller's chunk where the source can (no block allocated per chunk).
      const into = dest.subarray(0, byteSize(m.dtype, cshape));
      const block = src.readCols(name, p.start, p.end, [r0, r1], into);
      if (block !== into) dest.set(block);
      return;
    }
    const block = src.readCols(name, p.start, p.end, [r0, r1]);
    copyAxis(block, [r1 - r0, p.end - p.start, ...shape.slice(2)], 0, dest, cshape, at, 1, p.end - p.start, ITEMSIZE[m.dtype]);
    at += p.end - p.start;
  }
}

/**
 * Where rows [r0, r1) of the shard described by `sel` lie in the source's files, when they are stored
 * there as they are read: the whole tensor or row pieces of it (padding rows and column cuts have no
 * such ranges: undefined).
 */
export function rawSelectionRows(src: TensorSource, name: string, sel: Selection, r0: number, r1: number): RawRange[] | undefined {
  if (!src.fileRows) return undefined;
  if (sel.axis < 0) return src.fileRows(name, r0, r1);
  if (sel.axis !== 0) return undefined;
  const out: RawRange[] = [];
  let at = 0;
  for (const p of sel.pieces) {
    const len = 'zeros' in p ? p.zeros : p.end - p.start;
    const s = Math.max(r0, at), e = Math.min(r1, at + len);
    if (e > s) {
      if ('zeros' in p) return undefined;
      const r = src.fileRows(name, p.start + (s - at), p.start + (e - at));
      if (!r) return undefined;
      out.push(...r);
    }
    at += len;
  }
  return out;
}

/**
 * Where rows [r0, r1) of a column cut (`sel` along dim 1, one piece) lie in open files: whole rows there,
 * and which bytes of each row the cut takes (mapped-cols.ts writes them from a mapping). undefined for
 * other selections and for sources that permute, merge or decode their rows.
 */
export function rawSelectionCols(src: TensorSource, name: string, sel: Selection, r0: number, r1: number): ColumnCut[] | undefined {
  if (!src.fileRows || sel.axis !== 1 || sel.pieces.length !== 1) return undefined;
  const p = sel.pieces[0];
  if ('zeros' in p) return undefined;
  const m = src.info(name);
  if (m.shape.length < 2) return undefined;
  const inner = byteSize(m.dtype, m.shape.slice(2));
  const rb = rowBytes(m);
  const ranges = src.fileRows(name, r0, r1);
  if (!ranges || ranges.some((r) => r.len % rb !== 0)) return undefined;
  return ranges.map((range) => ({ range, rowBytes: rb, colOff: p.start * inner, run: (p.end - p.start) * inner }));
}

/** Columns of an in-memory tensor (shared by the in-memory sources). */
export function colsOf(t: Tensor, start: number, end: number, rows?: readonly [number, number]): Uint8Array {
  const [r0, r1] = rows ?? [0, t.shape[0]];
  const rb = byteSize(t.dtype, t.shape.slice(1));
  const src = t.data.subarray(r0 * rb, r1 * rb);
  const srcShape = [r1 - r0, ...t.shape.slice(1)];
  const shape = [...srcShape];
  shape[1] = end - start;
  const out = new Uint8Array(byteSize(t.dtype, shape));
  copyAxis(src, srcShape, start, out, shape, 0, 1, end - start, ITEMSIZE[t.dtype]);
  return out;
}

/** Full tensors already in memory (rank 0's quantized model, tests). */
export class MemorySource implements TensorSource {
  constructor(private weights: Weights, readonly where = 'memory') {}
  names(): string[] { return [...this.weights.keys()]; }
  has(name: string): boolean { return this.weights.has(name); }
  get(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new InputError(`${this.where}: missing tensor ${name}`);
    return t;
  }
  info(name: string): TensorMeta { const t = this.get(name); return { dtype: t.dtype, shape: t.shape }; }
  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const t = this.get(name);
    const rb = byteSize(t.dtype, t.shape.slice(1));
    dest.set(t.data.subarray(start * rb, end * rb), destOff);
  }
  readCols(name: string, start: number, end: number, rows?: readonly [number, number]): Uint8Array { return colsOf(this.get(name), start, end, rows); }
  close(): void {}
}

/** One logical tensor made of other tensors stacked along dim 0 (fused qkv = [q; k; v]). */
export interface Part { src: TensorSource; name: string }

/**
 * Renames and stacks tensors of another source: each logical name maps to one or more parts stacked
 * along dim 0. The HF and Meta loaders use it to present TensorRT-LLM's full tensors.
 */
export class StackedSource implements TensorSource {
  private metas = new Map<string, TensorMeta>();

  constructor(readonly where: string, private parts: Map<string, Part[]>) {
    for (const [name, ps] of parts) {
      const ms = ps.map((p) => p.src.info(p.name));
      const d = ms[0].dtype;
      const rest = ms[0].shape.slice(1).join();
      for (let i = 1; i < ms.length; i++) {
        if (ms[i].dtype !== d || ms[i].shape.slice(1).join() !== rest) {
          throw new InputError(`${where}: ${ps[i].name} is ${ms[i].dtype}[${ms[i].shape}], does not stack with ${ps[0].name} ${d}[${ms[0].shape}]`);
        }
      }
      const rows = ms.reduce((a, m) => a + rowsOf(m.shape), 0);
      this.metas.set(name, { dtype: d, shape: ms[0].shape.length ? [rows, ...ms[0].shape.slice(1)] : [] });
    }
  }

  names(): string[] { return [...this.parts.keys()]; }
  has(name: string): boolean { return this.parts.has(name); }
  info(name: string): TensorMeta {
    const m = this.metas.get(name);
    if (!m) throw new InputError(`${this.where}: missing tensor ${name}`);
    return m;
  }
  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const rb = rowBytes(this.info(name));
    let base = 0;
    for (const p of this.parts.get(name)!) {
      const n = rowsOf(p.src.info(p.name).shape);
      const s = Math.max(start, base);
      const e = Math.min(end, base + n);
      if (e > s) p.src.readRows(p.name, s - base, e - base, dest, destOff + (s - start) * rb);
      base += n;
    }
  }
  fileRows(name: string, start: number, end: number): RawRange[] | undefined {
    const out: RawRange[] = [];
    let base = 0;
    for (const p of this.parts.get(name)!) {
      const n = rowsOf(p.src.info(p.name).shape);
      const s = Math.max(start, base), e = Math.min(end, base + n);
      if (e > s) {
        const r = p.src.fileRows?.(p.name, s - base, e - base);
        if (!r) return undefined;
        out.push(...r);
      }
      base += n;
    }
    return out;
  }
  readCols(name: string, start: number, end: number, rows?: readonly [number, number], dest?: Uint8Array): Uint8Array {
    const [r0, r1] = rows ?? [0, rowsOf(this.info(name).shape)];
    const ps = this.parts.get(name)!;
    if (ps.length === 1) return ps[0].src.readCols(ps[0].name, start, end, [r0, r1], dest);
    const blocks: Uint8Array[] = [];
    let base = 0;
    for (const p of this.parts.get(name)!) {
      const n = rowsOf(p.src.info(p.name).shape);
      const s = Math.max(r0, base), e = Math.min(r1, base + n);
      if (e > s) blocks.push(p.src.readCols(p.name, start, end, [s - base, e - base]));
      base += n;
    }
    if (blocks.length === 1) return blocks[0];
    const out = new Uint8Array(blocks.reduce((a, b) => a + b.length, 0));
    let at = 0;
    for (const b of blocks) { out.set(b, at); at += b.length; }
    return out;
  }
  close(): void {
    const seen = new Set<TensorSource>();
    for (const ps of this.parts.values()) for (const p of ps) seen.add(p.src);
    for (const s of seen) s.close();
  }
}

/** TensorRT-LLM names of a dense LLaMA, in the order they are written. */
export function llamaTensorNames(numLayers: number): string[] {
  const names = ['transformer.vocab_embedding.weight'];
  for (let l = 0; l < numLayers; l++) {
    const p = `transformer.layers.${l}`;
    names.push(`${p}.input_layernorm.weight`, `${p}.attention.qkv.weight`, `${p}.attention.dense.weight`,
      `${p}.post_layernorm.weight`, `${p}.mlp.fc.weight`, `${p}.mlp.gate.weight`, `${p}.mlp.proj.weight`);
  }
  names.push('transformer.ln_f.weight', 'lm_head.weight');
  return names;
}

/** Expected full shape of each TensorRT-LLM tensor, to check sources against the config. */
export function expectedShape(name: string, c: {
  vocab_size: number; hidden_size: number; num_attention_heads: number; num_key_value_heads: number;
  head_size: number; intermediate_size: number;
}): number[] | undefined {
  const h = c.hidden_size;
  const qd = c.num_attention_heads * c.head_size;
  const kvd = c.num_key_value_heads * c.head_size;
  if (name === 'transformer.vocab_embedding.weight' || name === 'lm_head.weight') return [c.vocab_size, h];
  if (/(input_layernorm|post_layernorm|ln_f)\.weight$/.test(name)) return [h];
  if (name.endsWith('.attention.qkv.weight')) return [qd + 2 * kvd, h];
  if (name.endsWith('.attention.dense.weight')) return [h, qd];
  if (/\.mlp\.(fc|gate)\.weight$/.test(name)) return [c.intermediate_size, h];
  if (name.endsWith('.mlp.proj.weight')) return [h, c.intermediate_size];
  return undefined;
}

export function numelOf(m: TensorMeta): number {
  return numel(m.shape);
}
