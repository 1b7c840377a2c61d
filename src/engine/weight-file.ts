// One rank's weights as ONNX external data: a single file, each tensor at an offset aligned to 64 KiB
// so onnxruntime can memory-map it (64 KiB is the largest mapping granularity it meets, Windows').

import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { ExternalRef } from './onnx-proto.js';

export const WEIGHT_ALIGN = 64 * 1024;

export class WeightFile {
  private entries: { name: string; data: Uint8Array; offset: number }[] = [];
  private byName = new Map<string, ExternalRef>();
  size = 0;
  /** Bytes of tensor data (the file less its alignment padding). */
  dataBytes = 0;

  constructor(readonly location: string) {}

  /** Reserves a slot for `data` (once per name: segments sharing a weight share its bytes). */
  add(name: string, data: Uint8Array): ExternalRef {
    const known = this.byName.get(name);
    if (known) return known;
    const offset = Math.ceil(this.size / WEIGHT_ALIGN) * WEIGHT_ALIGN;
    const ref = { location: this.location, offset, length: data.length };
    this.entries.push({ name, data, offset });
    this.byName.set(name, ref);
    this.size = offset + data.length;
    this.dataBytes += data.length;
    return ref;
  }

  /** Writes the file and returns its sha256 (recorded in the engine config to detect damage). */
  async write(path: string): Promise<string> {
    const fh = await open(path, 'w');
    const hash = createHash('sha256');
    try {
      let pos = 0;
      for (const e of this.entries) {
        if (e.offset > pos) {
          const pad = new Uint8Array(e.offset - pos);
          hash.update(pad);
          await fh.write(pad, 0, pad.length, pos);
        }
        hash.update(e.data);
        await fh.write(e.data, 0, e.data.length, e.offset);
        pos = e.offset + e.data.length;
      }
    } finally {
      await fh.close();
    }
    return hash.digest('hex');
  }
}
