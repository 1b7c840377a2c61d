// The central directory of a zip archive (torch.save files are zips of stored, uncompressed entries),
// read from the end of the file; zip64 included, since torch writes it for large checkpoints.
import fs from 'node:fs';
import { InputError } from '../core/errors.js';
import { preadFully } from './ranged.js';

export interface ZipEntry {
  name: string;
  method: number;
  size: number;
  /** Absolute offset of the entry's data (after its local header). */
  dataOffset: number;
}

export function readZipDirectory(fd: number, file: string): Map<string, ZipEntry> {
  const size = fs.fstatSync(fd).size;
  const tailLen = Math.min(size, 22 + 65535 + 20);
  const tail = Buffer.alloc(tailLen);
  preadFully(fd, tail, 0, tailLen, size - tailLen, file);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new InputError(`${file}: not a zip archive (no end of central directory; truncated?)`);
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOff = tail.readUInt32LE(eocd + 16);
  if (eocd >= 20 && tail.readUInt32LE(eocd - 20) === 0x07064b50) {
    const z64Off = Number(tail.readBigUInt64LE(eocd - 20 + 8));
    if (z64Off + 56 > size) throw new InputError(`${file}: zip64 record past the end of the file`);
    const z = Buffer.alloc(56);
    preadFully(fd, z, 0, 56, z64Off, file);
    if (z.readUInt32LE(0) !== 0x06064b50) throw new InputError(`${file}: bad zip64 end of central directory`);
    count = Number(z.readBigUInt64LE(32));
    cdSize = Number(z.readBigUInt64LE(40));
    cdOff = Number(z.readBigUInt64LE(48));
  }
  if (cdOff + cdSize > size || cdSize > 256 << 20) throw new InputError(`${file}: zip central directory out of range (truncated?)`);
  const cd = Buffer.alloc(cdSize);
  preadFully(fd, cd, 0, cdSize, cdOff, file);
  const out = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cd.readUInt32LE(p) !== 0x02014b50) throw new InputError(`${file}: corrupt zip central directory (entry ${i})`);
    const method = cd.readUInt16LE(p + 10);
    let csize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nlen = cd.readUInt16LE(p + 28);
    const xlen = cd.readUInt16LE(p + 30);
    const clen = cd.readUInt16LE(p + 32);
    let local = cd.readUInt32LE(p + 42);
    if (p + 46 + nlen + xlen > cdSize) throw new InputError(`${file}: corrupt zip central directory (entry ${i})`);
    const name = cd.toString('utf8', p + 46, p + 46 + nlen);
    // zip64 extra field: the 64-bit values present are exactly those whose 32-bit field is 0xFFFFFFFF.
    let x = p + 46 + nlen;
    const xend = x + xlen;
    while (x + 4 <= xend) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let q = x + 4;
        if (usize === 0xffffffff) { usize = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (csize === 0xffffffff) { csize = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (local === 0xffffffff) { local = Number(cd.readBigUInt64LE(q)); q += 8; }
      }
      x += 4 + len;
    }
    p += 46 + nlen + xlen + clen;
    if (local + 30 > size) throw new InputError(`${file}: zip entry ${name} starts past the end of the file`);
    const lh = Buffer.alloc(30);
    preadFully(fd, lh, 0, 30, local, file);
    if (lh.readUInt32LE(0) !== 0x04034b50) throw new InputError(`${file}: zip entry ${name}: bad local header`);
    const dataOffset = local + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    if (dataOffset + csize > size) throw new InputError(`${file}: zip entry ${name} runs past the end of the file (truncated?)`);
    out.set(name, { name, method, size: method === 0 ? csize : usize, dataOffset });
  }
  return out;
}
