// torch.save archives (a zip holding data.pkl plus one raw entry per storage): the state dict's tensors
// as ranged-readable stored tensors, without loading the storages.
import fs from 'node:fs';
import type { DType } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { ITEMSIZE, byteSize, numel } from '../core/dtype.js';
import { PyGlobal, isTensorRef, unpickle } from './pickle.js';
import { readZipDirectory } from './zip.js';
import { type StoredTensor, preadFully, readColsAt, readRowsAt } from './ranged.js';

/** torch storage class names (torch.save's pickle) <-> our names. */
const TORCH_STORAGE_DTYPE: Record<string, DType> = {
  DoubleStorage: 'float64', FloatStorage: 'float32', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  Float8_e4m3fnStorage: 'float8_e4m3fn', LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16',
  CharStorage: 'int8', ByteStorage: 'uint8', BoolStorage: 'bool',
};

interface StorageRef { dtype: DType; key: string; offset: number; nbytes: number }

export interface TorchTensor {
  dtype: DType;
  shape: number[];
  stored?: StoredTensor;
  /** Non-contiguous tensors (rare in checkpoints) are materialised once on first read. */
  strided?: { storage: StorageRef; storageOffset: number; stride: number[] };
}

export class TorchFile {
  readonly tensors = new Map<string, TorchTensor>();
  private fd: number;

  private constructor(readonly file: string, fd: number) { this.fd = fd; }

  static open(file: string): TorchFile {
    let fd: number;
    try { fd = fs.openSync(file, 'r'); } catch (e: any) { throw new InputError(`${file}: cannot open (${e.code ?? e.message})`); }
    const f = new TorchFile(file, fd);
    try { f.parse(); } catch (e) { fs.closeSync(fd); throw e; }
    return f;
  }

  private parse(): void {
    const file = this.file;
    const entries = readZipDirectory(this.fd, file);
    const pkl = [...entries.values()].find((e) => e.name === 'data.pkl' || e.name.endsWith('/data.pkl'));
    if (!pkl) throw new InputError(`${file}: no data.pkl in the archive (not a torch.save file)`);
    if (pkl.method !== 0) throw new InputError(`${file}: data.pkl is compressed (method ${pkl.method}); torch.save stores it uncompressed`);
    if (pkl.size > 1 << 30) throw new InputError(`${file}: data.pkl is implausibly large`);
    const prefix = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
    const buf = new Uint8Array(pkl.size);
    preadFully(this.fd, buf, 0, pkl.size, pkl.dataOffset, file);
    const storages = new Map<string, StorageRef>();
    const root = unpickle(buf, file, (pid) => {
      if (!Array.isArray(pid) || pid[0] !== 'storage') throw new InputError(`${file}: unsupported persistent id in data.pkl`);
      const [, type, key] = pid as [string, unknown, unknown];
      const tname = type instanceof PyGlobal ? type.name : String(type);
      const dtype = TORCH_STORAGE_DTYPE[tname];
      if (!dtype) throw new InputError(`${file}: storage ${String(key)}: unknown dtype ${tname}`);
      const k = String(key);
      const e = entries.get(`${prefix}data/${k}`);
      if (!e) throw new InputError(`${file}: storage ${k} missing from the archive`);
      if (e.method !== 0) throw new InputError(`${file}: storage ${k} is compressed (method ${e.method})`);
      const ref = { dtype, key: k, offset: e.dataOffset, nbytes: e.size };
      storages.set(k, ref);
      return ref;
    });
    if (!(root instanceof Map)) throw new InputError(`${file}: data.pkl does not hold a state dict`);
    for (const [k, v] of root) {
      if (typeof k !== 'string' || !isTensorRef(v)) continue;
      const where = `${file}: tensor ${k}`;
      const s = v.storage as StorageRef;
      if (!s || typeof s !== 'object' || !('dtype' in s)) throw new InputError(`${where}: no storage`);
      const shape = v.shape;
      if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0) || v.stride.length !== shape.length) throw new InputError(`${where}: bad shape/stride`);
      const n = numel(shape);
      const isz = ITEMSIZE[s.dtype];
      let last = v.storageOffset;
      for (let i = 0; i < shape.length; i++) if (shape[i] > 0) last += (shape[i] - 1) * v.stride[i];
      if (n > 0 && (last + 1) * isz > s.nbytes) {
        throw new InputError(`${where}: needs ${(last + 1) * isz} bytes of storage ${s.key}, which has ${s.nbytes}`);
      }
      let contiguous = true;
      for (let i = shape.length - 1, expect = 1; i >= 0; i--) {
        if (shape[i] !== 1 && v.stride[i] !== expect) contiguous = false;
        expect *= shape[i];
      }
      if (contiguous) {
        this.tensors.set(k, { dtype: s.dtype, shape, stored: { fd: this.fd, file, name: k, dtype: s.dtype, shape, offset: s.offset + v.storageOffset * isz } });
      } else {
        this.tensors.set(k, { dtype: s.dtype, shape, strided: { storage: s, storageOffset: v.storageOffset, stride: v.stride } });
      }
    }
  }

  get(name: string): TorchTensor {
    const t = this.tensors.get(name);
    if (!t) throw new InputError(`${this.file}: missing tensor ${name}`);
    return t;
  }

  /** A contiguous copy of a strided tensor, read as one storage span. */
  private materialise(name: string, t: TorchTensor): StoredTensor & { data: Uint8Array } {
    const { storage, storageOffset, stride } = t.strided!;
    const isz = ITEMSIZE[t.dtype];
    const span = new Uint8Array(storage.nbytes - storageOffset * isz);
    preadFully(this.fd, span, 0, span.length, storage.offset + storageOffset * isz, this.file);
    const out = new Uint8Array(byteSize(t.dtype, t.shape));
    const idx = new Array(t.shape.length).fill(0);
    for (let i = 0, n = numel(t.shape); i < n; i++) {
      let off = 0;
      for (let d = 0; d < idx.length; d++) off += idx[d] * stride[d];
      out.set(span.subarray(off * isz, off * isz + isz), i * isz);
      for (let d = idx.length - 1; d >= 0; d--) { if (++idx[d] < t.shape[d]) break; idx[d] = 0; }
    }
    return { fd: -1, file: this.file, name, dtype: t.dtype, shape: t.shape, offset: 0, data: out };
  }

  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const t = this.get(name);
    if (t.stored) return readRowsAt(t.stored, start, end, dest, destOff);
    const m = this.materialise(name, t);
    const rb = byteSize(t.dtype, t.shape.slice(1));
    dest.set(m.data.subarray(start * rb, end * rb), destOff);
  }

  readCols(name: string, start: number, end: number, rowRange?: readonly [number, number]): Uint8Array {
    const t = this.get(name);
    if (t.stored) return readColsAt(t.stored, start, end, rowRange);
    const m = this.materialise(name, t);
    const [r0, r1] = rowRange ?? [0, t.shape[0]];
    const rows = r1 - r0;
    const inner = byteSize(t.dtype, t.shape.slice(2));
    const rb = t.shape[1] * inner;
    const run = (end - start) * inner;
    const out = new Uint8Array(rows * run);
    for (let r = 0; r < rows; r++) out.set(m.data.subarray((r0 + r) * rb + start * inner, (r0 + r) * rb + start * inner + run), r * run);
    return out;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}
