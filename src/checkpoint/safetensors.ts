// safetensors files: a validated header, then reads of only the byte ranges asked for (pread at offsets;
// never the whole file), and a streaming writer whose memory use is one tensor at a time.
import fs from 'node:fs';
import { promisify } from 'node:util';

const writeAt = promisify(fs.write);
import path from 'node:path';
import type { DType, Tensor } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { withPath } from './outdir.js';
import { copyRange, copyRangeAsync } from './kernel-copy.js';
import { type ColumnCut, cutBytes, writeColumns, writeColumnsAsync } from './mapped-cols.js';
import { ITEMSIZE, byteSize, numel } from '../core/dtype.js';
import { type RawRange, type StoredTensor, preadFully, rawRowsAt, readColsAt, readRowsAt } from './ranged.js';

export { preadFully };

/** safetensors header codes <-> our names. */
const ST_TO_DTYPE: Record<string, DType> = {
  F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16', F8_E4M3: 'float8_e4m3fn',
  I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const DTYPE_TO_ST: Record<DType, string> = Object.fromEntries(
  Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  nbytes: number;
}

// A header larger than this is surely corrupt; refusing it avoids allocating gigabytes for a bad prefix.
const MAX_HEADER = 100 * 1024 * 1024;

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private fd: number;

  private constructor(readonly file: string, fd: number) {
    this.fd = fd;
  }

  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e: any) {
      throw new InputError(`${file}: cannot open (${e.code ?? e.message})`);
    }
    const f = new SafetensorsFile(file, fd);
    try {
      f.parseHeader();
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    return f;
  }

  private parseHeader(): void {
    const file = this.file;
    const size = fs.fstatSync(this.fd).size;
    if (size < 8) throw new InputError(`${file}: truncated (${size} bytes, no safetensors header)`);
    const prefix = new Uint8Array(8);
    preadFully(this.fd, prefix, 0, 8, 0, file);
    const hlen64 = new DataView(prefix.buffer).getBigUint64(0, true);
    if (hlen64 > BigInt(size - 8)) {
      throw new InputError(`${file}: header length ${hlen64} runs past the end of the file (${size} bytes)`);
    }
    const hlen = Number(hlen64);
    if (hlen > MAX_HEADER) throw new InputError(`${file}: header length ${hlen} is implausibly large`);
    const hbytes = new Uint8Array(hlen);
    preadFully(this.fd, hbytes, 0, hlen, 8, file);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(hbytes));
    } catch (e: any) {
      throw new InputError(`${file}: malformed header JSON (${String(e.message).split('\n')[0]})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw new InputError(`${file}: header is not a JSON object`);
    }
    const dataStart = 8 + hlen;
    const dataLen = size - dataStart;
    const spans: Array<[number, number, string]> = [];
    for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) {
          throw new InputError(`${file}: __metadata__ is not an object`);
        }
        for (const [k, s] of Object.entries(v)) {
          if (typeof s !== 'string') throw new InputError(`${file}: __metadata__.${k} is not a string`);
          this.metadata[k] = s;
        }
        continue;
      }
      const where = `${file}: tensor ${name}`;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InputError(`${where}: entry is not an object`);
      const { dtype, shape, data_offsets } = v as Record<string, unknown>;
      if (typeof dtype !== 'string') throw new InputError(`${where}: missing dtype`);
      const dt = ST_TO_DTYPE[dtype];
      if (!dt) throw new InputError(`${where}: unknown dtype ${JSON.stringify(dtype).slice(0, 40)}`);
      if (!Array.isArray(shape) || !shape.every(isUint)) throw new InputError(`${where}: shape is not a list of non-negative integers`);
      if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || !data_offsets.every(isUint)) {
        throw new InputError(`${where}: data_offsets is not a pair of non-negative integers`);
      }
      const [b, e] = data_offsets as number[];
      if (b > e) throw new InputError(`${where}: data_offsets [${b}, ${e}] are reversed`);
      if (e > dataLen) {
        throw new InputError(`${where}: data_offsets [${b}, ${e}] out of range (data section is ${dataLen} bytes; file truncated?)`);
      }
      const want = numel(shape as number[]) * ITEMSIZE[dt];
      if (!Number.isSafeInteger(want) || want !== e - b) {
        throw new InputError(`${where}: shape [${(shape as number[]).join(', ')}] ${dtype} needs ${want} bytes but data_offsets span ${e - b}`);
      }
      this.tensors.set(name, { dtype: dt, shape: [...(shape as number[])], offset: dataStart + b, nbytes: e - b });
      if (e > b) spans.push([b, e, name]);
    }
    spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    for (let i = 1; i < spans.length; i++) {
      if (spans[i][0] < spans[i - 1][1]) {
        throw new InputError(`${file}: tensor ${spans[i][2]} overlaps tensor ${spans[i - 1][2]} (offsets ${spans[i][0]} < ${spans[i - 1][1]})`);
      }
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new InputError(`${this.file}: missing tensor ${name}`);
    return t;
  }

  /** Whole tensor. */
  read(name: string): Tensor {
    const t = this.info(name);
    const data = new Uint8Array(t.nbytes);
    preadFully(this.fd, data, 0, t.nbytes, t.offset, this.file);
    return { dtype: t.dtype, shape: [...t.shape], data };
  }

  private stored(name: string): StoredTensor {
    const t = this.info(name);
    return { fd: this.fd, file: this.file, name, dtype: t.dtype, shape: t.shape, offset: t.offset };
  }

  /** Rows [start, end) along dim 0, into dest at destOff (allocated when omitted). */
  readRows(name: string, start: number, end: number, dest?: Uint8Array, destOff = 0): Uint8Array {
    const t = this.info(name);
    const rows = t.shape.length ? t.shape[0] : 1;
    const out = dest ?? new Uint8Array(Math.max(0, end - start) * (t.nbytes / Math.max(1, rows)));
    readRowsAt(this.stored(name), start, end, out, dest ? destOff : 0);
    return out;
  }

  /** Where rows [start, end) along dim 0 lie in this file. */
  fileRows(name: string, start: number, end: number): RawRange[] {
    return [rawRowsAt(this.stored(name), start, end)];
  }

  /** Columns [start, end) along dim 1 (other dims whole), reading only those byte runs (into dest when given). */
  readCols(name: string, start: number, end: number, rows?: readonly [number, number], dest?: Uint8Array): Uint8Array {
    return readColsAt(this.stored(name), start, end, rows, dest);
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * Writes the header up front (shapes are known from the plan), then tensors one by one in that order,
 * so only the tensor being written is in memory.
 */
export class SafetensorsWriter {
  private fd: number;
  private next = 0;
  private pos: number;
  private chunkBase = 0;

  constructor(readonly file: string, private specs: TensorSpec[], metadata?: Record<string, string>) {
    const header: Record<string, unknown> = {};
    if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
    let off = 0;
    for (const s of specs) {
      const n = byteSize(s.dtype, s.shape);
      header[s.name] = { dtype: DTYPE_TO_ST[s.dtype], shape: s.shape, data_offsets: [off, off + n] };
      off += n;
    }
    let json = Buffer.from(JSON.stringify(header), 'utf8');
    // Pad with spaces to 8 bytes, like the reference implementation, so data starts aligned.
    const pad = (8 - (json.length % 8)) % 8;
    if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.fd = fs.openSync(file, 'w');
    try {
      fs.writeSync(this.fd, prefix);
      fs.writeSync(this.fd, json);
    } catch (e) {
      fs.closeSync(this.fd);
      throw withPath(e, file);
    }
    this.pos = 8 + json.length;
  }

  /** Checks `t` against the plan and reserves its place; returns its file offset. */
  private check(name: string, t: Tensor): number {
    const s = this.specs[this.next];
    if (!s || s.name !== name) throw new Error(`${this.file}: wrote ${name} but the plan expected ${s?.name ?? 'nothing more'}`);
    if (s.dtype !== t.dtype || s.shape.join() !== t.shape.join() || t.data.length !== byteSize(s.dtype, s.shape)) {
      throw new Error(`${this.file}: tensor ${name} is ${t.dtype}[${t.shape}] (${t.data.length} bytes), plan says ${s.dtype}[${s.shape}]`);
    }
    const pos = this.pos;
    this.pos += t.data.length;
    this.next++;
    return pos;
  }

  write(name: string, t: Tensor): void {
    this.writeAllSync(t.data, this.check(name, t));
  }

  /** All of `buf` at `pos`, naming this file where it fails (node's ENOSPC / EIO messages do not say which). */
  private writeAllSync(buf: Uint8Array, pos: number): void {
    try {
      for (let done = 0; done < buf.length;) done += fs.writeSync(this.fd, buf, done, buf.length - done, pos + done);
    } catch (e) {
      throw withPath(e, this.file);
    }
  }

  /**
   * Like write, but the bytes go out on libuv's thread pool, so the caller can read the next tensor
   * meanwhile. `t.data` must stay untouched until the promise settles; writes must not overlap.
   */
  async writeAsync(name: string, t: Tensor): Promise<void> {
    await this.writeBytes(this.check(name, t), t.data);
  }

  /**
   * Chunked writing: bytes of tensor `name` at `offset` within it. Chunks come in order and each tensor
   * of the plan is covered fully before the next begins.
   */
  async writeChunk(name: string, data: Uint8Array, offset: number): Promise<void> {
    await this.writeBytes(this.place(name, offset, data.length), data);
  }

  /**
   * Like writeChunk, with the chunk's bytes copied from `ranges` of open files inside the kernel
   * (kernel-copy.ts), or read and written here where the kernel cannot copy between these files.
   * Returns the bytes the kernel copied.
   */
  copyChunk(name: string, ranges: RawRange[], offset: number): number {
    let pos = this.place(name, offset, ranges.reduce((a, r) => a + r.len, 0));
    let copied = 0;
    for (const r of ranges) {
      if (copyRange(r.fd, r.pos, this.fd, pos, r.len, r.file, this.file)) copied += r.len;
      else this.copyByHand(r, pos);
      pos += r.len;
    }
    return copied;
  }

  /**
   * copyChunk with the kernel's copies on libuv's thread pool (kernel-copy.ts copyRangeAsync): the
   * caller's thread goes on (another rank file's chunk) meanwhile. Chunks must not overlap in flight.
   */
  async copyChunkAsync(name: string, ranges: RawRange[], offset: number): Promise<number> {
    let pos = this.place(name, offset, ranges.reduce((a, r) => a + r.len, 0));
    let copied = 0;
    for (const r of ranges) {
      if (await copyRangeAsync(r.fd, r.pos, this.fd, pos, r.len, r.file, this.file)) copied += r.len;
      else this.copyByHand(r, pos);
      pos += r.len;
    }
    return copied;
  }

  private copyByHand(r: RawRange, pos: number): void {
    const buf = new Uint8Array(r.len);
    preadFully(r.fd, buf, 0, r.len, r.pos, r.file);
    this.writeAllSync(buf, pos);
  }

  /**
   * Like writeChunk, with the chunk's bytes the runs of `cuts` (a column cut's rows in the source files),
   * written from a mapping of them (mapped-cols.ts), or read and written here where they cannot be
   * mapped. Returns the bytes written from mappings.
   */
  copyColumns(name: string, cuts: ColumnCut[], offset: number): number {
    let pos = this.place(name, offset, cuts.reduce((a, c) => a + cutBytes(c), 0));
    let mapped = 0;
    for (const c of cuts) {
      const bytes = cutBytes(c);
      if (writeColumns(c, this.fd, pos, this.file)) mapped += bytes;
      else this.columnsByHand(c, pos);
      pos += bytes;
    }
    return mapped;
  }

  /** copyColumns with the writes on libuv's thread pool (mapped-cols.ts writeColumnsAsync). */
  async copyColumnsAsync(name: string, cuts: ColumnCut[], offset: number): Promise<number> {
    let pos = this.place(name, offset, cuts.reduce((a, c) => a + cutBytes(c), 0));
    let mapped = 0;
    for (const c of cuts) {
      const bytes = cutBytes(c);
      if (await writeColumnsAsync(c, this.fd, pos, this.file)) mapped += bytes;
      else this.columnsByHand(c, pos);
      pos += bytes;
    }
    return mapped;
  }

  /** A cut's runs read with their whole rows and written from a buffer (where they cannot be mapped). */
  private columnsByHand(c: ColumnCut, pos: number): void {
    const rows = c.range.len / c.rowBytes;
    const whole = new Uint8Array(c.range.len);
    preadFully(c.range.fd, whole, 0, c.range.len, c.range.pos, c.range.file);
    const buf = new Uint8Array(rows * c.run);
    for (let i = 0; i < rows; i++) buf.set(whole.subarray(i * c.rowBytes + c.colOff, i * c.rowBytes + c.colOff + c.run), i * c.run);
    this.writeAllSync(buf, pos);
  }

  /** The file position of `len` bytes at `offset` of tensor `name` (chunks in plan order, each tensor whole). */
  private place(name: string, offset: number, len: number): number {
    if (offset === 0) {
      const s = this.specs[this.next];
      if (!s || s.name !== name) throw new Error(`${this.file}: wrote ${name} but the plan expected ${s?.name ?? 'nothing more'}`);
      this.chunkBase = this.pos;
      this.pos += byteSize(s.dtype, s.shape);
      this.next++;
    } else if (this.specs[this.next - 1]?.name !== name) {
      throw new Error(`${this.file}: chunk of ${name} out of order`);
    }
    const s = this.specs[this.next - 1];
    if (offset + len > byteSize(s.dtype, s.shape)) throw new Error(`${this.file}: chunk past the end of ${name}`);
    return this.chunkBase + offset;
  }

  private async writeBytes(pos: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await writeAt(this.fd, data, done, data.length - done, pos + done).catch((e) => { throw withPath(e, this.file); });
      done += bytesWritten;
    }
  }

  close(): void {
    if (this.next !== this.specs.length) {
      fs.closeSync(this.fd);
      throw new Error(`${this.file}: closed after ${this.next} of ${this.specs.length} tensors`);
    }
    fs.closeSync(this.fd);
  }

  abort(): void {
    try { fs.closeSync(this.fd); } catch { /* already closed */ }
  }
}

/** Writes a whole map in one go (small files, tests). */
export function writeSafetensors(file: string, weights: Map<string, Tensor>, metadata?: Record<string, string>): void {
  const specs = [...weights].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  const w = new SafetensorsWriter(file, specs, metadata);
  for (const [name, t] of weights) w.write(name, t);
  w.close();
}

/** Reads a whole file into a map (small files, tests). */
export function readSafetensors(file: string): Map<string, Tensor> {
  const f = SafetensorsFile.open(file);
  try {
    const out = new Map<string, Tensor>();
    for (const name of f.tensors.keys()) out.set(name, f.read(name));
    return out;
  } finally {
    f.close();
  }
}
