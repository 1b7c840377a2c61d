// How --kernels wgsl reads an engine's segments (src/engine/engine-weights.ts engineGraph): one pass per
// ONNX file gives the initializers (inline or in the weight file; one shared by several segments once, the
// first segment's) and the nodes in order with their integer attributes; a missing tensor is named. No GPU:
// the files are written by the engine's own encoder (src/engine/onnx-proto.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeModel } from '../dist/engine/onnx-proto.js';
import { engineGraph, TensorReader } from '../dist/engine/engine-weights.js';

/** @param {any[]} nodes @param {any[]} initializers */
const model = (nodes, initializers) => encodeModel({ graphName: 'g', nodes, initializers, inputs: [], outputs: [], opsets: [{ domain: '', version: 21 }], producer: 'test' });

test('engineGraph: every segment\'s initializers (shared ones once, the first segment\'s) and nodes in order with their integer attributes; TensorReader names a missing tensor', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-wgsl-weights-'));
  try {
    const b = Uint8Array.from({ length: 32 }, (_, i) => i);
    writeFileSync(join(dir, 'weights.bin'), Uint8Array.from({ length: 24 }, (_, i) => 100 + i));
    writeFileSync(join(dir, 'seg0.onnx'), model([
      { op: 'MatMulNBits', name: 'mm', domain: 'com.microsoft', inputs: ['x', 'l.weight', 'l.scales', '', ''], outputs: ['y'],
        attrs: { K: 16, N: 4, bits: 4, block_size: 16, accuracy_level: 0, note: 'text', alpha: { float: 0.5 } } },
      { op: 'Add', name: 'add', inputs: ['y', 'shared'], outputs: ['z'] },
    ], [
      { name: 'l.weight', dtype: 'uint8', dims: [4, 1, 8], raw: b },
      { name: 'shared', dtype: 'float16', dims: [2], raw: new Uint8Array(4) },
      { name: 'l.scales', dtype: 'float16', dims: [4], external: { location: 'weights.bin', offset: 16, length: 8 } },
    ]));
    writeFileSync(join(dir, 'seg1.onnx'), model([{ op: 'Mul', name: 'mul', inputs: ['z', 'shared'], outputs: ['w'] }], [
      { name: 'shared', dtype: 'float16', dims: [3], raw: new Uint8Array(6) },
      { name: 'own', dtype: 'float32', dims: [1], raw: new Uint8Array(4) },
    ]));
    const { tensors, nodes } = engineGraph([join(dir, 'seg0.onnx'), join(dir, 'seg1.onnx')]);
    assert.deepEqual([...tensors.keys()].sort(), ['l.scales', 'l.weight', 'own', 'shared']);
    assert.deepEqual(tensors.get('shared')?.dims, [2], 'the first segment\'s copy');
    assert.equal(tensors.get('own')?.dir, dir);
    assert.deepEqual(tensors.get('l.scales')?.external, { location: 'weights.bin', offset: 16, length: 8 });
    assert.deepEqual(nodes, [
      { op: 'MatMulNBits', inputs: ['x', 'l.weight', 'l.scales', '', ''], attrs: { K: 16, N: 4, bits: 4, block_size: 16, accuracy_level: 0 } },
      { op: 'Add', inputs: ['y', 'shared'], attrs: {} },
      { op: 'Mul', inputs: ['z', 'shared'], attrs: {} },
    ]);
    const reader = new TensorReader(tensors);
    try {
      assert.deepEqual([...reader.read('l.weight')], [...b]);
      assert.deepEqual([...reader.read('l.scales')], [116, 117, 118, 119, 120, 121, 122, 123]);
      // A tensor the loader asks for that the engine lacks: one line naming it, whether its header or bytes are asked for.
      for (const ask of [() => reader.info('lm_head.weight'), () => reader.read('lm_head.weight')]) {
        assert.throws(ask, (/** @type {any} */ e) => e.constructor.name === 'InputError' && e.message === 'engine tensor lm_head.weight is missing (--kernels wgsl reads the engine\'s own tensors)');
      }
    } finally {
      reader.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
