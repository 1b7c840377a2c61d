/// <reference types="@webgpu/types" />
// Puts one rank's engine tensors on the GPU in the layouts the kernels read.
//
// Linears: the GEMV wants float16 [N, K] rows, in chunks of at most maxStorageBufferBindingSize bytes (a
// big lm_head or embedding becomes several bindings, each its own dispatch). Engines built for the CPU
// store them so (FusedMatMul with transB): their rows are written as they are. A MatMul's [K, N]
// initializer (engines built for the GPU) is uploaded in slabs of K rows into a staging buffer and
// transposed on the GPU into the chunks. mlp.fc and mlp.gate go into one weight, chunk by chunk [fc rows | gate rows], for the fused
// SwiGLU GEMV. Norm scales and the rotary tables become float32.

import { InputError } from '../../core/errors.js';
import { halfBitsToFloat32 } from '../dtype.js';
import { bindGroup, uniform } from './kernels/common.js';
import type { Pipelines } from './pipelines.js';
import type { EngineNode, TensorReader } from '../engine-weights.js';
import { MAX_CHUNK_ROWS } from './variants.js';
import type { WeightFormat } from './kernels/gemv.js';
import { nbitsChunk, readNbits, type NbitsPart } from './upload-nbits.js';

/** Rows [n0, n0 + n) of a linear: weights, and for quantized ones their block scales and zero points. */
export interface GemvChunk { buf: GPUBuffer; n0: number; n: number; sc?: GPUBuffer; zb?: GPUBuffer }
export interface GemvWeight {
  K: number;
  N: number;
  swiglu: boolean;
  chunks: GemvChunk[];
  fmt: WeightFormat;
  /** 16-byte units per stored row; quantization block size and blocks per row (0 for float16). */
  KU: number;
  bs: number;
  nb: number;
  /** Default zero point, and whether the chunks' zb buffers hold per-block ones. */
  zp: number;
  hasZp: boolean;
  /** AWQ prequant factor per part (x ⊙ pre is what the weights multiply), where the engine has one. */
  pre?: Float32Array[];
  /** The same on the GPU, parts one after another. */
  preBuf?: GPUBuffer;
}

const STAGING_MAX = 64 << 20;

export function concat(vs: Float32Array[]): Float32Array {
  const out = new Float32Array(vs.reduce((a, v) => a + v.length, 0));
  let o = 0;
  for (const v of vs) { out.set(v, o); o += v.length; }
  return out;
}

export class Uploader {
  private staging: GPUBuffer;
  private stagingBytes: number;
  private pending = 0;
  /** Transpose uniforms, freed once the GPU is done with them. */
  private temp: GPUBuffer[] = [];

  constructor(private device: GPUDevice, private pl: Pipelines, private reader: TensorReader, readonly maxBinding: number, private nodes = new Map<string, EngineNode>(), private rowMajor = new Set<string>()) {
    this.stagingBytes = Math.min(STAGING_MAX, maxBinding);
    this.staging = device.createBuffer({ size: this.stagingBytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label: 'staging' });
  }

  private float16(name: string, rank: number): { dims: number[]; bytes: Uint8Array } {
    const t = this.reader.info(name);
    if (t.dtype !== 'float16') {
      throw new InputError(`${name}: ${t.dtype} in the engine; --kernels wgsl runs float16 engines (build with --dtype float16)${/int|uint/.test(t.dtype) ? ': quantized weights are not supported by the WGSL kernels yet' : ''}`);
    }
    if (t.dims.length !== rank) throw new InputError(`${name}: expected ${rank} dimension(s), the engine has [${t.dims}]`);
    return { dims: t.dims, bytes: this.reader.read(name) };
  }

  /** A float16 vector or table as float32 (norm scales, rotary tables), with the host copy. */
  floats(name: string, label = name): { buf: GPUBuffer; dims: number[]; host: Float32Array } {
    const t = this.float16(name, this.reader.info(name).dims.length);
    const f = halfBitsToFloat32(new Uint16Array(t.bytes.buffer.slice(t.bytes.byteOffset, t.bytes.byteOffset + t.bytes.byteLength)));
    return { buf: this.vector(f, label), dims: t.dims, host: f };
  }

  /** A float32 vector on the GPU (the kernels' per-K input scales). */
  vector(v: Float32Array, label: string): GPUBuffer {
    const buf = this.device.createBuffer({ size: Math.max(16, v.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label });
    this.device.queue.writeBuffer(buf, 0, v as Float32Array<ArrayBuffer>);
    return buf;
  }

  /** The [V, H] float16 embedding table in chunks of whole rows. */
  table(name: string): { chunks: { buf: GPUBuffer; r0: number; rows: number }[]; rows: number; H: number } {
    const { dims: [V, H], bytes } = this.float16(name, 2);
    if (H % 2) throw new InputError(`${name}: hidden size ${H} is odd; --kernels wgsl needs it even`);
    const rowBytes = H * 2;
    const per = Math.max(1, Math.floor(this.maxBinding / rowBytes));
    const chunks = [];
    for (let r0 = 0; r0 < V; r0 += per) {
      const rows = Math.min(per, V - r0);
      const buf = this.device.createBuffer({ size: rows * rowBytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label: `${name}[${r0}]` });
      this.device.queue.writeBuffer(buf, 0, bytes as Uint8Array<ArrayBuffer>, r0 * rowBytes, rows * rowBytes);
      chunks.push({ buf, r0, rows });
    }
    return { chunks, rows: V, H };
  }

  /** A linear ([N, K] FusedMatMul or [K, N] MatMul weight, or fc + gate for SwiGLU) as [N, K] chunks; a MatMulNBits one as its blocks. */
  async linear(names: string[]): Promise<GemvWeight> {
    const q = names.map((n) => readNbits(this.reader, this.nodes, n));
    if (q.every(Boolean)) return this.nbits(q as NbitsPart[]);
    if (q.some(Boolean)) throw new InputError(`${names.join(' and ')}: one quantized, one not; --kernels wgsl fuses them only when alike`);
    const rows = names.map((n) => this.rowMajor.has(n));
    if (rows.some((r) => r !== rows[0])) throw new InputError(`${names.join(' and ')}: one stored [N, K], one [K, N]; --kernels wgsl fuses them only when alike`);
    const parts = names.map((n) => ({ name: n, ...this.float16(n, 2) }));
    const [K, N] = rows[0] ? [parts[0].dims[1], parts[0].dims[0]] : parts[0].dims;
    const dimsOf = (d: number[]) => rows[0] ? [d[1], d[0]] : d;
    for (const p of parts) if (dimsOf(p.dims)[0] !== K || dimsOf(p.dims)[1] !== N) throw new InputError(`${p.name}: [${p.dims}] does not match ${parts[0].name} [${parts[0].dims}]`);
    if (K % 8) throw new InputError(`${parts[0].name}: input size ${K} is not a multiple of 8, which the WGSL matrix-vector kernel reads at a time`);
    const swiglu = parts.length === 2;
    const rowBytes = K * 2 * parts.length;
    // 16 zero rows after each chunk: the subgroup-matrix prefill GEMM (kernels/gemm.ts sgmatShader) loads
    // whole 16-row tiles, and one that straddles the chunk's end (N or K not a multiple of the tile) must
    // stay inside the buffer rather than rely on what robust access does to an out-of-bounds matrix load.
    const pad = 16 * K * 2;
    const per = Math.min(MAX_CHUNK_ROWS, Math.floor((this.maxBinding - pad) / rowBytes));
    if (per < 1) throw new InputError(`${parts[0].name}: one row of ${K} halves exceeds the device's largest storage binding`);
    const chunks: GemvChunk[] = [];
    for (let n0 = 0; n0 < N; n0 += per) {
      const n = Math.min(per, N - n0);
      const usage = GPUBufferUsage.STORAGE | (rows[0] ? GPUBufferUsage.COPY_DST : 0);
      chunks.push({ n0, n, buf: this.device.createBuffer({ size: n * rowBytes + pad, usage, label: `${parts[0].name}[${n0}]` }) });
    }
    const out = { K, N, swiglu, chunks, fmt: 'f16' as const, KU: K / 8, bs: 0, nb: 0, zp: 0, hasZp: false };
    if (rows[0]) {
      // Part pi's rows of a chunk follow the other parts' (pi · n rows in), as the transpose below lays them.
      for (const c of chunks) {
        for (const [pi, p] of parts.entries()) {
          this.device.queue.writeBuffer(c.buf, pi * c.n * K * 2, p.bytes as Uint8Array<ArrayBuffer>, c.n0 * K * 2, c.n * K * 2);
          await this.throttle(c.n * K * 2);
        }
      }
      return out;
    }
    // Slabs of K rows of the [K, N] source; an even count, as the transpose packs two halves per word.
    let ks = Math.floor(this.stagingBytes / (N * 2));
    ks -= ks % 2;
    if (ks < 2) throw new InputError(`${parts[0].name}: a row of ${N} halves exceeds the staging buffer`);
    const enc = () => this.device.createCommandEncoder();
    for (const [pi, p] of parts.entries()) {
      for (let k0 = 0; k0 < K; k0 += ks) {
        const rows = Math.min(ks, K - k0);
        this.device.queue.writeBuffer(this.staging, 0, p.bytes as Uint8Array<ArrayBuffer>, k0 * N * 2, rows * N * 2);
        const e = enc();
        const pass = e.beginComputePass();
        const temp: GPUBuffer[] = [];
        for (const c of chunks) {
          const u = uniform(this.device, [N, K, k0, rows, c.n0, c.n, pi * c.n], 'transpose.p');
          temp.push(u);
          pass.setPipeline(this.pl.transpose.p);
          pass.setBindGroup(0, bindGroup(this.device, this.pl.transpose.bgl, [u, this.staging, c.buf], 'transpose'));
          pass.dispatchWorkgroups(Math.ceil(rows / 2 / 64), Math.min(c.n, 65535), Math.ceil(c.n / 65535));
        }
        pass.end();
        this.device.queue.submit([e.finish()]);
        this.temp.push(...temp);
        await this.throttle(rows * N * 2);
      }
    }
    return out;
  }

  private async nbits(parts: NbitsPart[]): Promise<GemvWeight> {
    const [p0] = parts;
    for (const p of parts) {
      if (p.K !== p0.K || p.N !== p0.N || p.bits !== p0.bits || p.bs !== p0.bs) throw new InputError(`${p.name}: K ${p.K}, N ${p.N}, ${p.bits} bits, block ${p.bs} does not match ${p0.name}'s ${p0.K}, ${p0.N}, ${p0.bits}, ${p0.bs}`);
    }
    const { K, N, nb, bits, bs } = p0;
    const padded = Math.ceil(p0.rowBytes / 16) * 16;
    const hasZp = parts.some((p) => p.zeros);
    const per = Math.min(MAX_CHUNK_ROWS, Math.floor(this.maxBinding / (padded * parts.length)));
    if (per < 1) throw new InputError(`${p0.name}: one row of ${p0.rowBytes} bytes exceeds the device's largest storage binding`);
    const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
    const chunks: GemvChunk[] = [];
    for (let n0 = 0; n0 < N; n0 += per) {
      const n = Math.min(per, N - n0);
      const c = nbitsChunk(parts, n0, n, padded);
      const buf = this.device.createBuffer({ size: c.bytes.byteLength, usage: S, label: `${p0.name}[${n0}]` });
      this.device.queue.writeBuffer(buf, 0, c.bytes as Uint8Array<ArrayBuffer>);
      const sc = this.vector(c.scales, `${p0.name}.scales[${n0}]`);
      const zb = c.zeros ? this.vector(c.zeros, `${p0.name}.zeros[${n0}]`) : undefined;
      chunks.push({ buf, n0, n, sc, zb });
      await this.throttle(c.bytes.byteLength);
    }
    const pre = parts.some((p) => p.pre) ? parts.map((p) => p.pre ?? new Float32Array(K).fill(1)) : undefined;
    const preBuf = pre && this.vector(concat(pre), `${p0.name}.prequant`);
    return { K, N, swiglu: parts.length === 2, chunks, fmt: bits === 4 ? 'q4' : 'q8', KU: padded / 16, bs, nb, zp: 2 ** (bits - 1), hasZp, ...(pre ? { pre, preBuf } : {}) };
  }

  // Dawn copies every writeBuffer into memory of its own until the GPU consumes it: wait now and then.
  private async throttle(bytes: number): Promise<void> {
    this.pending += bytes;
    if (this.pending < 256 << 20) return;
    this.pending = 0;
    await this.device.queue.onSubmittedWorkDone();
  }

  async done(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.staging.destroy();
    for (const u of this.temp) u.destroy();
    this.temp = [];
  }
}
