// INT8 KV cache around com.microsoft GroupQueryAttention. GQA reads and writes its cache in the
// activation dtype only, so the cache crosses the graph boundary as int8 (what the runtime keeps between
// steps: a quarter of float32's memory) and is widened right before GQA:
//
//   past.L.key int8 ─DequantizeLinear(scale)─► GQA ─► present (float) ─QuantizeLinear(scale)─► present.L.key int8
//
// Honest trade-off: every step dequantizes and requantizes the whole cache window (a pass over
// capacity × kv_heads × head_size bytes per layer) because GQA cannot read int8 directly; the
// requantization is exact for entries already on the int8 grid, so old tokens never drift. The
// attention of a prefill sees its own keys/values in float (as TensorRT-LLM's context phase does);
// every later step reads them back from int8.
//
// It lives in the engine, beside the graph it is part of: the engine builds every LLaMA graph, quantized
// or not, and the quantization layer (which calibrates through the engine) stands above it.

import type { Weights } from '../core/tensor.js';
import { castTensor, numel } from '../core/dtype.js';
import type { Graph } from './graph.js';
import type { QuantConfig } from '../core/config.js';

export function isInt8KvCache(quant: QuantConfig | undefined): boolean {
  return quant?.kv_cache_quant_algo === 'INT8';
}

function scaleConst(g: Graph, layerPrefix: string, weights: Weights): string {
  const name = `${layerPrefix}.attention.kv_cache_scaling_factor`;
  const t = weights.get(name);
  if (!t) throw new Error(`missing tensor ${name} (kv_cache_quant_algo INT8 needs it)`);
  const f = castTensor(t, 'float32', { what: name });
  // A DataView, not a Float32Array: a scale inside a mapped file need not be 4-byte aligned.
  const v = new DataView(f.data.buffer, f.data.byteOffset, f.data.byteLength);
  const s = Array.from({ length: numel(f.shape) }, (_, i) => v.getFloat32(4 * i, true));
  if (s.length !== 1 || !(s[0] > 0)) throw new Error(`${name}: expected one positive scale, got [${s}]`);
  return g.constant(name, 'float32', [], new Uint8Array(Float32Array.of(s[0]).buffer));
}

/** int8 past (graph input) → the float tensor GroupQueryAttention takes (in the graph dtype). */
export function kvPastToFloat(g: Graph, past: string, layerPrefix: string, weights: Weights): string {
  const f = g.op('DequantizeLinear', [past, scaleConst(g, layerPrefix, weights)]);
  return g.dtype === 'float32' ? f : g.op('Cast', [f], { to: 10 });
}

/** GroupQueryAttention's float present → the int8 graph output `name`. */
export function kvPresentToInt8(g: Graph, present: string, name: string, layerPrefix: string, weights: Weights): string {
  const f = g.dtype === 'float32' ? present : g.op('Cast', [present], { to: 1 });
  const zp = g.constant('kv_zero_point', 'int8', [], new Uint8Array(1));
  g.node('QuantizeLinear', [f, scaleConst(g, layerPrefix, weights), zp], [name]);
  return name;
}
