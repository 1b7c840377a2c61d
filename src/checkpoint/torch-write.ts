// Writes torch.save-compatible archives (zip of data.pkl + raw storages, entries stored and 64-byte
// aligned like torch does) so Meta-format checkpoints can be produced for tests and benchmarks.
import fs from 'node:fs';
import zlib from 'node:zlib';
import type { DType, Tensor } from '../core/tensor.js';
import { InputError } from '../core/errors.js';

const STORAGE_OF: Partial<Record<DType, string>> = {
  float32: 'FloatStorage', float16: 'HalfStorage', bfloat16: 'BFloat16Storage', int8: 'CharStorage',
  uint8: 'ByteStorage', int32: 'IntStorage', int64: 'LongStorage', float64: 'DoubleStorage',
};

/** Protocol-2 pickle of an OrderedDict name -> _rebuild_tensor_v2(persistent storage i, 0, shape, stride). */
function statePickle(entries: Array<{ name: string; dtype: DType; shape: number[]; numel: number }>): Buffer {
  const out: number[] = [];
  const b = (...x: number[]) => out.push(...x);
  const u32 = (v: number) => b(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  const str = (s: string) => { const e = Buffer.from(s, 'utf8'); b(0x58); u32(e.length); out.push(...e); };
  const int = (v: number) => {
    if (v < 256) b(0x4b, v);
    else if (v < 65536) b(0x4d, v & 0xff, v >> 8);
    else if (v < 2 ** 31) { b(0x4a); u32(v); }
    else { // LONG1, 8 bytes little-endian
      b(0x8a, 8);
      let x = BigInt(v);
      for (let i = 0; i < 8; i++) { b(Number(x & 0xffn)); x >>= 8n; }
    }
  };
  const tuple = (xs: number[]) => { b(0x28); xs.forEach(int); b(0x74); };
  const global = (m: string, n: string) => out.push(0x63, ...Buffer.from(`${m}\n${n}\n`));
  b(0x80, 2);
  global('collections', 'OrderedDict');
  b(0x29, 0x52); // () REDUCE
  b(0x28); // MARK for SETITEMS
  entries.forEach((e, i) => {
    const storage = STORAGE_OF[e.dtype];
    if (!storage) throw new InputError(`tensor ${e.name}: dtype ${e.dtype} has no torch storage type`);
    str(e.name);
    global('torch._utils', '_rebuild_tensor_v2');
    b(0x28); // args
    b(0x28); str('storage'); global('torch', storage); str(String(i)); str('cpu'); int(e.numel); b(0x74, 0x51); // persid
    int(0);
    tuple(e.shape);
    const stride = e.shape.map((_, d) => e.shape.slice(d + 1).reduce((a, x) => a * x, 1));
    tuple(stride);
    b(0x89); // requires_grad False
    global('collections', 'OrderedDict'); b(0x29, 0x52);
    b(0x74, 0x52); // TUPLE REDUCE
  });
  b(0x75, 0x2e); // SETITEMS STOP
  return Buffer.from(out);
}

/** Streams a zip of stored entries; the central directory is written at close. */
class ZipWriter {
  private fd: number;
  private pos = 0;
  private cd: Buffer[] = [];
  private count = 0;

  constructor(private file: string) { this.fd = fs.openSync(file, 'w'); }

  add(name: string, data: Uint8Array): void {
    const nameB = Buffer.from(name, 'utf8');
    const base = 30 + nameB.length + 4;
    const pad = (64 - ((this.pos + base) % 64)) % 64; // torch aligns storages to 64 bytes
    const extra = Buffer.alloc(4 + pad);
    extra.writeUInt16LE(0x4655, 0); // 'FU', torch's padding extra field id
    extra.writeUInt16LE(pad, 2);
    if (this.pos + base + pad + data.length >= 0xffffffff) throw new Error(`${this.file}: archives over 4 GiB need zip64, not written by this generator`);
    const crc = zlib.crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(20, 4); lh.writeUInt16LE(0x0800, 6); lh.writeUInt16LE(0, 8);
    lh.writeUInt32LE(crc >>> 0, 14); lh.writeUInt32LE(data.length, 18); lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(nameB.length, 26); lh.writeUInt16LE(extra.length, 28);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0); ch.writeUInt16LE(20, 4); ch.writeUInt16LE(20, 6); ch.writeUInt16LE(0x0800, 8);
    ch.writeUInt32LE(crc >>> 0, 16); ch.writeUInt32LE(data.length, 20); ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(nameB.length, 28); ch.writeUInt32LE(this.pos, 42);
    this.cd.push(ch, nameB);
    this.write(lh); this.write(nameB); this.write(extra); this.write(data);
    this.count++;
  }

  private write(b: Uint8Array): void {
    let done = 0;
    while (done < b.length) done += fs.writeSync(this.fd, b, done, b.length - done, this.pos + done);
    this.pos += b.length;
  }

  close(): void {
    const cdStart = this.pos;
    for (const b of this.cd) this.write(b);
    const e = Buffer.alloc(22);
    e.writeUInt32LE(0x06054b50, 0);
    e.writeUInt16LE(this.count, 8); e.writeUInt16LE(this.count, 10);
    e.writeUInt32LE(this.pos - cdStart, 12); e.writeUInt32LE(cdStart, 16);
    this.write(e);
    fs.closeSync(this.fd);
  }
}

/** Writes `tensors` (produced lazily, in order) as torch.save(OrderedDict) would. */
export function writeTorchFile(file: string, archive: string, specs: Array<{ name: string; dtype: DType; shape: number[] }>, produce: (name: string) => Tensor): void {
  const entries = specs.map((s) => ({ ...s, numel: s.shape.reduce((a, x) => a * x, 1) }));
  const z = new ZipWriter(file);
  z.add(`${archive}/data.pkl`, statePickle(entries));
  z.add(`${archive}/.format_version`, Buffer.from('1'));
  z.add(`${archive}/.storage_alignment`, Buffer.from('64'));
  z.add(`${archive}/byteorder`, Buffer.from('little'));
  specs.forEach((s, i) => z.add(`${archive}/data/${i}`, produce(s.name).data));
  z.add(`${archive}/version`, Buffer.from('3\n'));
  z.close();
}
