// The tensors of one rank's engine as the ONNX segments declare them: each initializer's name, type,
// shape and bytes (inline in the graph, or a slice of rank{r}/weights.bin). The WGSL runtime reads the
// very bytes onnxruntime would, so both run the same weights. Not WGSL-specific: runtime.ts reads an
// engine's graph through it too (its note on CPU-built engines run under WebGPU).

import { openSync, readSync, closeSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { InputError } from '../core/errors.js';
import { OnnxDType } from './onnx-proto.js';

export interface EngineTensor {
  name: string;
  dtype: string;
  dims: number[];
  /** Inline bytes, or where they are in the weight file. */
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

const DTYPE_NAMES = new Map<number, string>(Object.entries(OnnxDType).map(([k, v]) => [v, k]));

// Protobuf fields of one message: [field number, wire type, value (varint) or bytes].
function* fields(buf: Uint8Array): Generator<[number, number, number, Uint8Array | undefined]> {
  let i = 0;
  const varint = () => { let v = 0; let m = 1; for (;;) { const b = buf[i++]; v += (b & 127) * m; if (b < 128) return v; m *= 128; } };
  while (i < buf.length) {
    const key = varint();
    const f = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) yield [f, 0, varint(), undefined];
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) { const n = varint(); yield [f, 2, n, buf.subarray(i, i + n)]; i += n; }
    else throw new Error(`unexpected protobuf wire type ${wire}`);
  }
}

function packedVarints(b: Uint8Array): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < b.length) { let v = 0; let m = 1; for (;;) { const x = b[i++]; v += (x & 127) * m; if (x < 128) break; m *= 128; } out.push(v); }
  return out;
}

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** TensorProto (onnx.proto: dims 1, data_type 2, name 8, raw_data 9, external_data 13). */
function tensorProto(b: Uint8Array): EngineTensor {
  const t: EngineTensor = { name: '', dtype: '', dims: [] };
  const ext: Record<string, string> = {};
  for (const [f, w, v, bytes] of fields(b)) {
    if (f === 1) { if (w === 0) t.dims.push(v); else t.dims.push(...packedVarints(bytes!)); }
    else if (f === 2) t.dtype = DTYPE_NAMES.get(v) ?? `onnx type ${v}`;
    else if (f === 8) t.name = text(bytes!);
    else if (f === 9) t.raw = bytes;
    else if (f === 13) {
      let k = '';
      let val = '';
      for (const [g, , , s] of fields(bytes!)) { if (g === 1) k = text(s!); else if (g === 2) val = text(s!); }
      ext[k] = val;
    }
  }
  if (ext.location !== undefined) t.external = { location: ext.location, offset: Number(ext.offset ?? 0), length: Number(ext.length ?? 0) };
  t.raw ??= t.external ? undefined : new Uint8Array(0);
  return t;
}

/** A graph node as far as the WGSL loader needs it: its inputs and integer attributes. */
export interface EngineNode { op: string; inputs: string[]; attrs: Record<string, number> }

/** NodeProto (input 1, op_type 4, attribute 5 = AttributeProto: name 1, i 3). */
function nodeProto(b: Uint8Array): EngineNode {
  const n: EngineNode = { op: '', inputs: [], attrs: {} };
  for (const [h, , , v] of fields(b)) {
    if (h === 1) n.inputs.push(text(v!));
    else if (h === 4) n.op = text(v!);
    else if (h === 5) {
      let name = '';
      let i: number | undefined;
      for (const [a, w, av, ab] of fields(v!)) { if (a === 1) name = text(ab!); else if (a === 3 && w === 0) i = av; }
      if (i !== undefined) n.attrs[name] = i;
    }
  }
  return n;
}

/**
 * The rank's segments, each file read and parsed once (ModelProto graph 7 = GraphProto: node 1, initializer 5):
 * every initializer by name (one shared by several segments once, from the first) and every node, in order.
 */
export function engineGraph(segmentPaths: string[]): { tensors: Map<string, EngineTensor & { dir: string }>; nodes: EngineNode[] } {
  const tensors = new Map<string, EngineTensor & { dir: string }>();
  const nodes: EngineNode[] = [];
  for (const p of segmentPaths) {
    for (const [f, , , graph] of fields(readFileSync(p))) {
      if (f !== 7) continue;
      for (const [g, , , b] of fields(graph!)) {
        if (g === 5) {
          const t = tensorProto(b!);
          if (!tensors.has(t.name)) tensors.set(t.name, { ...t, dir: dirname(p) });
        } else if (g === 1) nodes.push(nodeProto(b!));
      }
    }
  }
  return { tensors, nodes };
}

/** Reads tensors' bytes, keeping the weight file open between reads. */
export class TensorReader {
  private fds = new Map<string, number>();
  constructor(private tensors: Map<string, EngineTensor & { dir: string }>) {}

  has(name: string): boolean { return this.tensors.has(name); }

  info(name: string): EngineTensor & { dir: string } {
    const t = this.tensors.get(name);
    if (!t) throw new InputError(`engine tensor ${name} is missing (--kernels wgsl reads the engine's own tensors)`);
    return t;
  }

  /** The tensor's bytes; `into` (at least its length) avoids an allocation for big tensors. */
  read(name: string, into?: Uint8Array): Uint8Array {
    const t = this.info(name);
    if (t.raw) return t.raw;
    const e = t.external!;
    const path = join(t.dir, e.location);
    let fd = this.fds.get(path);
    if (fd === undefined) { fd = openSync(path, 'r'); this.fds.set(path, fd); }
    const buf = into ? into.subarray(0, e.length) : new Uint8Array(e.length);
    let done = 0;
    while (done < e.length) {
      const n = readSync(fd, buf, done, e.length - done, e.offset + done);
      if (n <= 0) throw new InputError(`${path}: ends before tensor ${name} (damaged engine)`);
      done += n;
    }
    return buf;
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
