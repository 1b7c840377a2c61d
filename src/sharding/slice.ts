// Cutting and joining tensors along one axis by the pieces of a Selection. Works on raw bytes, so packed
// int4, fp8 and scale tensors need no special case.
import type { Tensor } from '../core/tensor.js';
import { ITEMSIZE, byteSize, numel } from '../core/dtype.js';
import { InputError } from '../core/errors.js';
import { type Rule, type Selection, type ShardContext, ruleFor, selection, shardShape } from './rules.js';

/** Copies `count` indices of `axis` from src (starting at srcStart) to dst (starting at dstStart). */
export function copyAxis(
  src: Uint8Array, srcShape: readonly number[], srcStart: number,
  dst: Uint8Array, dstShape: readonly number[], dstStart: number,
  axis: number, count: number, itemsize: number,
): void {
  const outer = numel(srcShape.slice(0, axis));
  const inner = numel(srcShape.slice(axis + 1)) * itemsize;
  const sRow = srcShape[axis] * inner;
  const dRow = dstShape[axis] * inner;
  const run = count * inner;
  for (let o = 0; o < outer; o++) {
    const s = o * sRow + srcStart * inner;
    dst.set(src.subarray(s, s + run), o * dRow + dstStart * inner);
  }
}

/** The shard of an in-memory full tensor. */
export function sliceTensor(t: Tensor, sel: Selection): Tensor {
  if (sel.axis < 0) return t;
  const shape = shardShape(t.shape, sel);
  const data = new Uint8Array(byteSize(t.dtype, shape));
  let at = 0;
  for (const p of sel.pieces) {
    if ('zeros' in p) { at += p.zeros; continue; } // fresh buffer is already zero
    copyAxis(t.data, t.shape, p.start, data, shape, at, sel.axis, p.end - p.start, ITEMSIZE[t.dtype]);
    at += p.end - p.start;
  }
  return { dtype: t.dtype, shape, data };
}

/** Full length of the cut axis, from a shard's shape. */
function fullAxisLength(rule: Rule, shardLen: number, ctx: ShardContext): number {
  const pack = rule.kind !== 'row' ? rule.axes.packN ?? 1 : 1;
  switch (rule.kind) {
    case 'vocab': return ctx.vocabSize / pack;
    case 'qkv': return ((ctx.numHeads + 2 * ctx.numKvHeads) * ctx.headSize) / pack;
    default: return shardLen * ctx.tp;
  }
}

/** The rank's shard of tensor `name`, cut from the full tensor by the project's one table of rules. */
export function shardTensor(name: string, full: Tensor, ctx: ShardContext, rank: number): Tensor {
  const rule = ruleFor(name, full.shape.length, ctx);
  return sliceTensor(full, selection(rule, full.shape, ctx, rank));
}

/** Joins the shards of every rank (in rank order) back into the full tensor; the inverse of shardTensor. */
export function gatherTensor(name: string, shards: Tensor[], ctx: ShardContext): Tensor {
  if (shards.length !== ctx.tp) throw new InputError(`tensor ${name}: ${shards.length} shards for tp=${ctx.tp}`);
  const first = shards[0];
  const rule = ruleFor(name, first.shape.length, ctx);
  if (rule.kind === 'replicated' || ctx.tp === 1) return first;
  const probe = selection(rule, fullShapeGuess(rule, first, ctx), ctx, 0);
  if (probe.axis < 0) return first;
  const shape = [...first.shape];
  shape[probe.axis] = fullAxisLength(rule, first.shape[probe.axis], ctx);
  const data = new Uint8Array(byteSize(first.dtype, shape));
  for (let r = 0; r < ctx.tp; r++) {
    const s = shards[r];
    const sel = selection(rule, shape, ctx, r);
    if (s.dtype !== first.dtype || s.shape.join() !== shardShape(shape, sel).join()) {
      throw new InputError(`tensor ${name}: rank ${r} shard is ${s.dtype}[${s.shape}], expected ${first.dtype}[${shardShape(shape, sel)}]`);
    }
    let at = 0;
    for (const p of sel.pieces) {
      if ('zeros' in p) { at += p.zeros; continue; }
      copyAxis(s.data, s.shape, at, data, shape, p.start, sel.axis, p.end - p.start, ITEMSIZE[s.dtype]);
      at += p.end - p.start;
    }
  }
  return { dtype: first.dtype, shape, data };
}

function fullShapeGuess(rule: Rule, shard: { shape: number[] }, ctx: ShardContext): number[] {
  const shape = [...shard.shape];
  if (rule.kind === 'replicated' || ctx.tp === 1) return shape;
  const axis = rule.kind === 'row' ? rule.axes.k! : rule.axes.n!;
  shape[axis] = fullAxisLength(rule, shard.shape[axis], ctx);
  return shape;
}

/** Full shape of tensor `name` given one rank's shard shape. */
export function fullShapeOf(name: string, shardShape: number[], ctx: ShardContext): number[] {
  return fullShapeGuess(ruleFor(name, shardShape.length, ctx), { shape: shardShape }, ctx);
}
