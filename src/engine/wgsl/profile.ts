/// <reference types="@webgpu/types" />
// GPU time per dispatch kind (TPRUN_WGSL_PROFILE=FILE, read by scripts/gpu/wgsl-profile.mjs): each
// dispatch gets its own compute pass with begin/end timestamp writes (WebGPU's 'timestamp-query'
// feature), the sums per kind go to FILE.rankN as JSON when the process exits. Profiling serialises
// the decode steps and adds a pass boundary per dispatch, so it says where GPU time goes, not the speed.

import { writeFileSync } from 'node:fs';
import { record, type Dispatch } from './kernels/common.js';

interface Sum { ms: number; calls: number }

export class GpuProfiler {
  private qs: GPUQuerySet;
  private resolveBuf: GPUBuffer;
  private readBuf: GPUBuffer;
  private sums: Record<string, Record<string, Sum>> = { decode: {}, prefill: {} };
  private steps: Record<string, number> = { decode: 0, prefill: 0 };

  constructor(private device: GPUDevice, private maxOps: number, file: string, adapter: string) {
    this.qs = device.createQuerySet({ type: 'timestamp', count: 2 * maxOps });
    this.resolveBuf = device.createBuffer({ size: 16 * maxOps, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    this.readBuf = device.createBuffer({ size: 16 * maxOps, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    process.on('exit', () => {
      const kinds = (k: string) => Object.fromEntries(Object.entries(this.sums[k]).sort((a, b) => b[1].ms - a[1].ms)
        .map(([n, s]) => [n, { ms_per_step: s.ms / Math.max(1, this.steps[k]), us_per_call: (1000 * s.ms) / s.calls, calls_per_step: s.calls / Math.max(1, this.steps[k]) }]));
      const total = (k: string) => Object.values(this.sums[k]).reduce((a, s) => a + s.ms, 0) / Math.max(1, this.steps[k]);
      writeFileSync(file, JSON.stringify({ adapter, decode_steps: this.steps.decode, decode_gpu_ms_per_step: total('decode'), decode: kinds('decode'),
        prefill_calls: this.steps.prefill, prefill_gpu_ms_per_call: total('prefill'), prefill: kinds('prefill') }) + '\n');
    });
  }

  /** Records `ops` one pass each with timestamps into `enc` and resolves them; call `collect` after the submit. */
  encode(enc: GPUCommandEncoder, ops: Dispatch[], T: number[]): void {
    const n = Math.min(ops.length, this.maxOps);
    for (let i = 0; i < n; i++) {
      const pass = enc.beginComputePass({ timestampWrites: { querySet: this.qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      record(pass, ops[i], T[i]);
      pass.end();
    }
    enc.resolveQuerySet(this.qs, 0, 2 * n, this.resolveBuf, 0);
    enc.copyBufferToBuffer(this.resolveBuf, 0, this.readBuf, 0, 16 * n);
  }

  async collect(kind: 'decode' | 'prefill', ops: Dispatch[]): Promise<void> {
    const n = Math.min(ops.length, this.maxOps);
    await this.readBuf.mapAsync(GPUMapMode.READ, 0, 16 * n);
    const t = new BigInt64Array(this.readBuf.getMappedRange(0, 16 * n));
    for (let i = 0; i < n; i++) {
      const name = ops[i].name ?? 'other';
      const s = (this.sums[kind][name] ??= { ms: 0, calls: 0 });
      s.ms += Number(t[2 * i + 1] - t[2 * i]) / 1e6;
      s.calls++;
    }
    this.readBuf.unmap();
    this.steps[kind]++;
  }
}
