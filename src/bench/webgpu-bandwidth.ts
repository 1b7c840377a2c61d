// The GPU's own memory bandwidth as onnxruntime's WebGPU provider sees it: the bound of a decode step on
// the GPU is its weight bytes over this, not over the host's memcpy.
//
// A chain of k element-wise Adds over a float32 tensor that stays in a GPU buffer: each Add reads and
// writes the whole tensor once (STREAM's copy convention: read + written bytes). One run of the chain
// ends with a one-element readback, so it waits for the device; the difference between the best run
// of a long chain and of a one-Add chain removes the run's fixed cost (upload, readback, dispatch).

import ort from '../engine/ort.js';
import { Graph } from '../engine/graph.js';
import { WeightFile } from '../engine/weight-file.js';

function chain(adds: number): Uint8Array {
  const g = new Graph(`add_chain_${adds}`, 'float32', new WeightFile('none.bin'));
  let v = g.input('x', 'float32', ['n']);
  const one = g.constant('one', 'float32', [1], new Uint8Array(Float32Array.of(1).buffer));
  for (let i = 0; i < adds; i++) v = g.op('Add', [v, one]);
  const first = g.op('Slice', [v, g.int64s('starts', [0]), g.int64s('ends', [1])]);
  g.node('Identity', [first], ['y']);
  g.output('y', 'float32', [1]);
  return g.encode();
}

// x = Expand(0, [n]): the big input is made on the GPU (no host upload) and kept there.
function filler(n: number): Uint8Array {
  const g = new Graph('fill', 'float32', new WeightFile('none.bin'));
  const zero = g.constant('zero', 'float32', [], new Uint8Array(4));
  g.node('Expand', [zero, g.int64s('shape', [n])], ['x']);
  g.output('x', 'float32', [n]);
  return g.encode();
}

export interface DeviceBandwidth { gb_per_s: number; bytes_per_add: number; adds: number; best_ms_long: number; best_ms_short: number }

/** Device-to-device bandwidth (GB/s, read + written) through the WebGPU provider. */
export async function webgpuCopyBandwidth(elems = 128 * 1024 * 1024, adds = 17, reps = 10): Promise<DeviceBandwidth> {
  const eps = ['webgpu'];
  const fill = await ort.InferenceSession.create(filler(elems), { executionProviders: eps, preferredOutputLocation: 'gpu-buffer' });
  const x = (await fill.run({})).x;
  const time = async (k: number) => {
    const s = await ort.InferenceSession.create(chain(k), { executionProviders: eps });
    try {
      await s.run({ x });
      let best = Infinity;
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        await s.run({ x });
        best = Math.min(best, performance.now() - t0);
      }
      return best;
    } finally {
      await s.release();
    }
  };
  try {
    const short = await time(1);
    const long = await time(adds);
    const bytes = 2 * 4 * elems;
    return { gb_per_s: Math.round(((bytes * (adds - 1)) / ((long - short) / 1000)) / 1e8) / 10, bytes_per_add: bytes, adds, best_ms_long: long, best_ms_short: short };
  } finally {
    x.dispose();
    await fill.release();
  }
}
