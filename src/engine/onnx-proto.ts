// A minimal protobuf encoder for the handful of ONNX messages an engine needs (ModelProto, GraphProto,
// NodeProto, AttributeProto, TensorProto with external data, ValueInfoProto). Hand-written because the
// schema subset is tiny and stable (field numbers from onnx/onnx.proto), and a generic protobuf library
// would need the .proto file shipped plus a runtime just to write ~10 message types.

export const OnnxDType = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, bool: 9,
  float16: 10, float64: 11, bfloat16: 16, float8_e4m3fn: 17,
} as const;
export type OnnxDTypeName = keyof typeof OnnxDType;

class Writer {
  private chunks: Uint8Array[] = [];
  private buf = new Uint8Array(256);
  private pos = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) this.buf = new Uint8Array(Math.max(n, 256));
  }
  private flush(): void {
    if (this.pos) this.chunks.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }
  varint(v: number | bigint): void {
    this.ensure(10);
    // Field tags, lengths and most attributes: plain numbers (a BigInt per varint cost ~10 ms of a build's
    // graph encoding); negatives and numbers past 2^53 take the 64-bit two's complement path.
    if (typeof v === 'number' && v >= 0 && Number.isSafeInteger(v)) {
      while (v >= 0x80) {
        this.buf[this.pos++] = (v % 0x80) | 0x80;
        v = Math.floor(v / 0x80);
      }
      this.buf[this.pos++] = v;
      return;
    }
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
  }
  bytes(b: Uint8Array): void {
    this.flush();
    this.chunks.push(b);
  }
  fixed32f(v: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset).setFloat32(this.pos, v, true);
    this.pos += 4;
  }
  size(): number {
    let n = this.pos;
    for (const c of this.chunks) n += c.length;
    return n;
  }
  finish(): Uint8Array {
    this.flush();
    if (this.chunks.length === 1) return this.chunks[0];
    const out = new Uint8Array(this.size());
    let o = 0;
    for (const c of this.chunks) { out.set(c, o); o += c.length; }
    return out;
  }
}

/** One encoder for every string (a new TextEncoder per string was half of a build's graph encoding time). */
const utf8 = new TextEncoder();

/** A protobuf message under construction; nested messages are encoded first and embedded as bytes. */
class Msg {
  w = new Writer();
  int(field: number, v: number | bigint): this { this.w.varint(field << 3); this.w.varint(v); return this; }
  float(field: number, v: number): this { this.w.varint((field << 3) | 5); this.w.fixed32f(v); return this; }
  raw(field: number, b: Uint8Array): this { this.w.varint((field << 3) | 2); this.w.varint(b.length); this.w.bytes(b); return this; }
  str(field: number, s: string): this { return this.raw(field, utf8.encode(s)); }
  msg(field: number, m: Msg): this { return this.raw(field, m.finish()); }
  finish(): Uint8Array { return this.w.finish(); }
}

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] } | { ints: number[] } | { graph: SubgraphSpec };

/** A control-flow body (If's then_branch / else_branch): it may read any value of the enclosing graph by name. */
export interface SubgraphSpec { name: string; nodes: NodeSpec[]; initializers?: InitializerSpec[]; inputs?: ValueSpec[]; outputs: (ValueSpec | { name: string; dtype: OnnxDTypeName })[] }

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  name: string;
  domain?: string;
  attrs?: Record<string, AttrValue>;
}

export interface ExternalRef { location: string; offset: number; length: number }

export interface InitializerSpec {
  name: string;
  dtype: OnnxDTypeName;
  dims: number[];
  /** Inline bytes, or a reference into the rank's weight file. */
  raw?: Uint8Array;
  external?: ExternalRef;
}

export interface ValueSpec { name: string; dtype: OnnxDTypeName; dims: (number | string)[] }

export interface ModelSpec {
  graphName: string;
  nodes: NodeSpec[];
  initializers: InitializerSpec[];
  inputs: ValueSpec[];
  outputs: ValueSpec[];
  opsets: { domain: string; version: number }[];
  producer: string;
  metadata?: Record<string, string>;
}

function attribute(name: string, v: AttrValue): Msg {
  const m = new Msg().str(1, name);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: use {float: x} for non-integers`);
    return m.int(3, v).int(20, 2);
  }
  if (typeof v === 'string') return m.str(4, v).int(20, 3);
  if (Array.isArray(v)) { for (const x of v) m.int(8, x); return m.int(20, 7); }
  if ('float' in v) return m.float(2, v.float).int(20, 1);
  if ('floats' in v) { for (const x of v.floats) m.float(7, x); return m.int(20, 6); }
  if ('graph' in v) return m.msg(6, graphProto(v.graph)).int(20, 5);
  for (const x of v.ints) m.int(8, x);
  return m.int(20, 7);
}

function tensorProto(t: InitializerSpec): Msg {
  const m = new Msg();
  for (const d of t.dims) m.int(1, d);
  m.int(2, OnnxDType[t.dtype]).str(8, t.name);
  if (t.external) {
    const kv = (k: string, v: string) => new Msg().str(1, k).str(2, v);
    m.msg(13, kv('location', t.external.location));
    m.msg(13, kv('offset', String(t.external.offset)));
    m.msg(13, kv('length', String(t.external.length)));
    m.int(14, 1);
  } else {
    m.raw(9, t.raw ?? new Uint8Array(0));
  }
  return m;
}

function valueInfo(v: ValueSpec | { name: string; dtype: OnnxDTypeName }): Msg {
  // No dims: a tensor of unknown shape (a branch body's outputs; the If's own output is inferred).
  if (!('dims' in v)) return new Msg().str(1, v.name).msg(2, new Msg().msg(1, new Msg().int(1, OnnxDType[v.dtype])));
  const shape = new Msg();
  for (const d of v.dims) shape.msg(1, typeof d === 'number' ? new Msg().int(1, d) : new Msg().str(2, d));
  const tensorType = new Msg().int(1, OnnxDType[v.dtype]).msg(2, shape);
  return new Msg().str(1, v.name).msg(2, new Msg().msg(1, tensorType));
}

function graphProto(spec: SubgraphSpec): Msg {
  const g = new Msg();
  for (const n of spec.nodes) {
    const nm = new Msg();
    for (const i of n.inputs) nm.str(1, i);
    for (const o of n.outputs) nm.str(2, o);
    nm.str(3, n.name).str(4, n.op);
    for (const [k, v] of Object.entries(n.attrs ?? {})) nm.msg(5, attribute(k, v));
    if (n.domain) nm.str(7, n.domain);
    g.msg(1, nm);
  }
  g.str(2, spec.name);
  for (const t of spec.initializers ?? []) g.msg(5, tensorProto(t));
  for (const v of spec.inputs ?? []) g.msg(11, valueInfo(v));
  for (const v of spec.outputs) g.msg(12, valueInfo(v));
  return g;
}

/** Serialises a model to ONNX protobuf bytes (IR version 10). */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const g = graphProto({ ...spec, name: spec.graphName });
  const model = new Msg().int(1, 10).str(2, spec.producer).str(3, '0.1.0');
  model.msg(7, g);
  for (const o of spec.opsets) model.msg(8, new Msg().str(1, o.domain).int(2, o.version));
  for (const [k, v] of Object.entries(spec.metadata ?? {})) model.msg(14, new Msg().str(1, k).str(2, v));
  return model.finish();
}
