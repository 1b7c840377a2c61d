// Graph-builder API used by the LLaMA graph (src/engine/llama-graph.ts) and by quantized linears
// (src/quantization/onnx-linear.ts). Kept deliberately small:
//
//   g.input(name, dtype, dims)            declare a graph input, returns its name
//   g.output(name, dtype, dims)           declare a graph output (an existing value name)
//   g.weight(name, tensor)                a weight initializer (any dtype, raw bytes, or a DeferredTensor
//                                         converted when the weight file is written): stored in the rank's
//                                         weight file (64 KiB aligned; inline when < 4 KiB) — name it after
//                                         the checkpoint tensor
//   g.constant(hint, dtype, dims, bytes)  a small inline initializer (shapes, axes, scalars)
//   g.node(op, inputs, nOut|names, attrs?, domain?)  add a node, returns its output names;
//                                         '' as an input means "optional input absent"
//   g.op(op, inputs, attrs?, domain?)     the same for single-output nodes, returns the output name
//   g.fresh(hint)                         a unique value name
//   g.dtype                               the activation dtype ('float32' | 'float16')
//   g.branch(hint, build)                 a body for If/Loop: `build` adds nodes to a child graph whose
//                                         names stay unique in the whole model and whose weights land in
//                                         this graph (a body reads them, as any outer value, by name),
//                                         but for g.weight(name, t, { inBranch: true })
//
// Attributes: integer number → INT, string → STRING, number[] → INTS, {float: x} → FLOAT,
// {floats: [...]} → FLOATS. Contrib ops take domain 'com.microsoft'.

import type { Tensor } from '../core/tensor.js';
import { encodeModel, type AttrValue, type SubgraphSpec, type InitializerSpec, type NodeSpec, type OnnxDTypeName, type ValueSpec } from './onnx-proto.js';
import type { WeightFile } from './weight-file.js';
import { type DeferredTensor, isDeferred, materialize } from './weight-convert.js';

export const MS = 'com.microsoft';

/** Weights smaller than this are stored inside the graph rather than in the weight file. */
export const INLINE_BELOW = 4096;

export class Graph {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: InitializerSpec[] = [];
  readonly inputs: ValueSpec[] = [];
  readonly outputs: ValueSpec[] = [];
  private names = new Set<string>();
  private counter = 0;
  /** Set on a branch body: the graph that holds its weights and shares its names. */
  private parent?: Graph;

  constructor(readonly name: string, readonly dtype: 'float32' | 'float16', private weights: WeightFile) {}

  /**
   * A control-flow body whose outputs are the values `build` returns, of type `dtype` (shapes left to
   * onnxruntime's inference). Value names are the parent's, so a body never shadows an outer value.
   */
  branch(hint: string, dtype: OnnxDTypeName, build: (b: Graph) => string[]): { graph: SubgraphSpec } {
    const b = new Graph(this.fresh(hint), this.dtype, this.weights);
    b.parent = this.parent ?? this;
    b.names = b.parent.names;
    const outputs = build(b);
    return { graph: { name: b.name, nodes: b.nodes, initializers: b.initializers, outputs: outputs.map((name) => ({ name, dtype })) } };
  }

  fresh(hint: string): string {
    if (this.parent) return this.parent.fresh(hint);
    let n = hint;
    while (this.names.has(n)) n = `${hint}_${++this.counter}`;
    this.names.add(n);
    return n;
  }

  input(name: string, dtype: OnnxDTypeName, dims: (number | string)[]): string {
    this.names.add(name);
    this.inputs.push({ name, dtype, dims });
    return name;
  }

  output(name: string, dtype: OnnxDTypeName, dims: (number | string)[]): string {
    this.outputs.push({ name, dtype, dims });
    return name;
  }

  /**
   * `inBranch`: a branch body keeps this weight among its own initializers (in the same weight file)
   * instead of its parent's. onnxruntime's graph transformers look a node's constant inputs up in the
   * node's own graph only: a weight the body reads from outside is not constant to them (the int8 → uint8
   * weight rewrite of Avx2WeightS8ToU8Transformer among them).
   */
  weight(name: string, t: Tensor | DeferredTensor, o?: { inBranch?: boolean }): string {
    if (this.parent && !o?.inBranch) return this.parent.weight(name, t);
    // Names are the parent's: one taken elsewhere would have this body read another graph's value.
    if (o?.inBranch && this.names.has(name) && !this.initializers.some((i) => i.name === name)) throw new Error(`${name}: a weight of that name is already in another graph`);
    if (!this.names.has(name)) {
      this.names.add(name);
      // Tiny tensors (norm scales, per-tensor scales) stay inline: a 64 KiB slot each would mostly be padding.
      const deferred = isDeferred(t);
      const inline = (deferred ? t.byteLength : t.data.length) < INLINE_BELOW;
      const raw = inline ? (deferred ? materialize(t).data : t.data) : undefined;
      this.initializers.push({ name, dtype: t.dtype as OnnxDTypeName, dims: t.shape, ...(raw ? { raw } : { external: this.weights.add(name, deferred ? t : t.data) }) });
    }
    return name;
  }

  constant(hint: string, dtype: OnnxDTypeName, dims: number[], raw: Uint8Array): string {
    const name = this.fresh(hint);
    this.initializers.push({ name, dtype, dims, raw });
    return name;
  }

  int64s(hint: string, values: number[], dims: number[] = [values.length]): string {
    return this.constant(hint, 'int64', dims, new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer));
  }

  node(op: string, inputs: string[], outs: number | string[], attrs?: Record<string, AttrValue>, domain?: string): string[] {
    const outputs = typeof outs === 'number'
      ? Array.from({ length: outs }, (_, i) => this.fresh(`${inputs[0] || op}/${op}${outs > 1 ? `:${i}` : ''}`))
      : outs.map((o) => (o === '' ? '' : (this.names.add(o), o)));
    this.nodes.push({ op, inputs, outputs, name: this.fresh(`node/${op}`), attrs, domain });
    return outputs;
  }

  op(op: string, inputs: string[], attrs?: Record<string, AttrValue>, domain?: string): string {
    return this.node(op, inputs, 1, attrs, domain)[0];
  }

  encode(metadata?: Record<string, string>): Uint8Array {
    return encodeModel({
      graphName: this.name,
      nodes: this.nodes,
      initializers: this.initializers,
      inputs: this.inputs,
      outputs: this.outputs,
      opsets: [{ domain: '', version: 21 }, { domain: MS, version: 1 }],
      producer: 'tprun',
      metadata,
    });
  }
}
