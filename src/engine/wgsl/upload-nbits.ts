// onnxruntime MatMulNBits linears (tprun's int4 weight-only / int4_awq engines, and int8 weight-only) in
// the layout the WGSL kernels read: the node's B bytes as they are ([N, K / bs, bs · bits / 8]: each output
// row's K values contiguous, low nibble first), rows padded to whole 16-byte units; the block scales and
// zero points as float32 [N, blocks]. The contract is onnxruntime's (docs/ContribOperators.md, MatMulNBits;
// contrib_ops/cpu/quantization/matmul_nbits.cc): zero points absent = 2^(bits − 1); present = uint8,
// packed like B for 4 bits, or of the scales' type. An AWQ prequant factor (a Mul on the input,
// src/quantization/onnx-linear.ts) comes back per part as `pre`, for the kernels to apply to x.

import { InputError } from '../../core/errors.js';
import { halfBitsToFloat32 } from '../dtype.js';
import type { EngineNode, TensorReader } from '../engine-weights.js';

export interface NbitsPart {
  name: string;
  K: number;
  N: number;
  bits: 4 | 8;
  bs: number;
  /** Blocks per row, and the row's bytes as stored. */
  nb: number;
  rowBytes: number;
  bytes: Uint8Array;
  scales: Float32Array;
  zeros?: Float32Array;
  pre?: Float32Array;
}

function floats(reader: TensorReader, name: string, what: string): Float32Array {
  const t = reader.info(name);
  const b = reader.read(name);
  if (t.dtype === 'float32') return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  if (t.dtype === 'float16') return halfBitsToFloat32(new Uint16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
  throw new InputError(`${name}: ${what} of type ${t.dtype}; --kernels wgsl reads float32 or float16 ones`);
}

/** The MatMulNBits node whose B is `name`, read and checked; null when no such node consumes it. */
export function readNbits(reader: TensorReader, nodes: Map<string, EngineNode>, name: string): NbitsPart | null {
  const node = nodes.get(name);
  if (!node) return null;
  const { K, N, bits, block_size: bs } = node.attrs;
  const where = `${name} (MatMulNBits)`;
  if (bits !== 4 && bits !== 8) throw new InputError(`${where}: ${bits}-bit weights; --kernels wgsl runs 4- and 8-bit MatMulNBits (use --kernels ort)`);
  if (!(bs >= 16) || (bs & (bs - 1))) throw new InputError(`${where}: block_size ${bs} is not a power of two ≥ 16`);
  if (K % 4) throw new InputError(`${where}: K ${K} is not a multiple of 4, which the WGSL kernels read at a time`);
  if ((node.inputs[4] ?? '') !== '' || (node.inputs[5] ?? '') !== '') throw new InputError(`${where}: g_idx / bias inputs; --kernels wgsl runs MatMulNBits without them (use --kernels ort)`);
  const nb = Math.ceil(K / bs);
  const rowBytes = (nb * bs * bits) / 8;
  const t = reader.info(name);
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.dtype !== 'uint8' || count !== N * rowBytes) throw new InputError(`${where}: ${t.dtype} [${t.dims}], expected uint8 [${N}, ${nb}, ${rowBytes / nb}]`);
  const scales = floats(reader, node.inputs[2], 'scales');
  if (scales.length !== N * nb) throw new InputError(`${node.inputs[2]}: ${scales.length} scales for ${N} rows × ${nb} blocks`);
  let zeros: Float32Array | undefined;
  const zpName = node.inputs[3] ?? '';
  if (zpName) {
    const zt = reader.info(zpName);
    if (zt.dtype === 'uint8') {
      const zb = reader.read(zpName);
      zeros = new Float32Array(N * nb);
      const per = Math.ceil((nb * bits) / 8);
      if (zb.length !== N * per) throw new InputError(`${zpName}: ${zb.length} bytes of zero points, expected ${N * per}`);
      for (let n = 0; n < N; n++) {
        for (let b = 0; b < nb; b++) zeros[n * nb + b] = bits === 8 ? zb[n * per + b] : (zb[n * per + (b >> 1)] >> ((b & 1) * 4)) & 15;
      }
    } else {
      zeros = floats(reader, zpName, 'zero points');
      if (zeros.length !== N * nb) throw new InputError(`${zpName}: ${zeros.length} zero points for ${N} rows × ${nb} blocks`);
    }
  }
  const preName = name.replace(/\.weight$/, '.prequant_scaling_factor');
  const pre = reader.has(preName) ? floats(reader, preName, 'prequant factor') : undefined;
  if (pre && pre.length !== K) throw new InputError(`${preName}: ${pre.length} values for K ${K}`);
  return { name, K, N, bits, bs, nb, rowBytes, bytes: reader.read(name), scales, zeros, pre };
}

/** Rows [n0, n0 + n) of each part, one after another ([fc rows | gate rows] for SwiGLU), rows padded to `padded` bytes. */
export function nbitsChunk(parts: NbitsPart[], n0: number, n: number, padded: number): { bytes: Uint8Array; scales: Float32Array; zeros?: Float32Array } {
  const { rowBytes, nb } = parts[0];
  const bytes = new Uint8Array(parts.length * n * padded);
  const scales = new Float32Array(parts.length * n * nb);
  const zeros = parts.some((p) => p.zeros) ? new Float32Array(parts.length * n * nb) : undefined;
  parts.forEach((p, pi) => {
    for (let r = 0; r < n; r++) {
      const dst = (pi * n + r);
      bytes.set(p.bytes.subarray((n0 + r) * rowBytes, (n0 + r + 1) * rowBytes), dst * padded);
      scales.set(p.scales.subarray((n0 + r) * nb, (n0 + r + 1) * nb), dst * nb);
      if (zeros) {
        if (p.zeros) zeros.set(p.zeros.subarray((n0 + r) * nb, (n0 + r + 1) * nb), dst * nb);
        else zeros.fill(2 ** (p.bits - 1), dst * nb, (dst + 1) * nb);
      }
    }
  });
  return { bytes, scales, zeros };
}
