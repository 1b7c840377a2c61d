// Which quantized kernels an execution provider runs itself: each kernel's graph (the very nodes
// onnx-linear.ts and engine/onnx-kv-cache.ts emit) is opened with CPU fallback disabled, so the session only
// opens if the provider takes every node; its output is then compared with the CPU provider's.
// `tprun bench quant --ops webgpu` prints the answer as JSON lines.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from '../engine/ort.js';
import type { Weights } from '../core/tensor.js';
import { Graph, MS } from '../engine/graph.js';
import { WeightFile } from '../engine/weight-file.js';
import type { QuantAlgo } from './algorithms.js';
import { LinearInputStats, type CalibrationStats } from './calib-stats.js';
import { emitQuantLinear } from './onnx-linear.js';
import { kvPastToFloat, kvPresentToInt8 } from '../engine/onnx-kv-cache.js';
import { quantizeWeights } from './quantize-model.js';

const N = 256, K = 256, T = 4, P = 'transformer.layers.0.mlp.fc';

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; };
}

interface Probe { name: string; graph: Uint8Array; weights: Uint8Array; feeds: () => Record<string, ort.Tensor>; output: string }

async function linearProbe(algo: QuantAlgo, extra: Record<string, unknown> = {}): Promise<Probe> {
  const r = rand(3);
  const w = Float32Array.from({ length: N * K }, () => r() * 0.1);
  const x = Float32Array.from({ length: T * K }, () => r());
  const weights: Weights = new Map();
  for (const lin of ['attention.qkv', 'attention.dense', 'mlp.fc', 'mlp.gate', 'mlp.proj']) {
    weights.set(`transformer.layers.0.${lin}.weight`, { dtype: 'float32', shape: [N, K], data: new Uint8Array(w.buffer) });
  }
  // SmoothQuant's plugin layout folds smoothing into the norms.
  for (const norm of ['input_layernorm', 'post_layernorm']) {
    weights.set(`transformer.layers.0.${norm}.weight`, { dtype: 'float32', shape: [K], data: new Uint8Array(new Float32Array(K).fill(1).buffer) });
  }
  const stats: CalibrationStats = { linears: new Map(), kvAbsmax: new Map(), tokens: T };
  for (const name of weights.keys()) {
    if (name.includes('layernorm')) continue;
    const st = new LinearInputStats(K);
    st.add(x, 1);
    stats.linears.set(name.replace(/\.weight$/, ''), st);
  }
  const q = await quantizeWeights({ num_hidden_layers: 1, dtype: 'float32' } as never, weights, { algo, groupSize: 128, ...extra }, stats);
  const wf = new WeightFile('w.bin');
  const g = new Graph('probe', 'float32', wf);
  const y = emitQuantLinear(g, g.input('x', 'float32', ['t', K]), P, q.weights, q.quantization);
  g.output(y, 'float32', ['t', N]);
  return { name: `${algo}${extra.sqActivations ? `/${extra.sqActivations}` : ''} (${q.quantization.quant_algo})`, graph: g.encode(), weights: await bytesOf(wf), feeds: () => ({ x: new ort.Tensor('float32', x, [T, K]) }), output: y };
}

async function bytesOf(wf: WeightFile): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-probe-'));
  try {
    await wf.write(join(dir, 'w.bin'));
    return new Uint8Array((await import('node:fs')).readFileSync(join(dir, 'w.bin')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function kvProbe(): Promise<Probe> {
  const NH = 4, KVH = 2, HS = 32, CAP = 8;
  const wf = new WeightFile('w.bin');
  const g = new Graph('kv', 'float32', wf);
  const weights: Weights = new Map([['transformer.layers.0.attention.kv_cache_scaling_factor', { dtype: 'float32', shape: [1], data: new Uint8Array(Float32Array.of(0.02).buffer) }]]);
  const qkv = g.input('qkv', 'float32', [1, 'seq', (NH + 2 * KVH) * HS]);
  const dims = [1, KVH, CAP, HS];
  const pk = g.input('past_key', 'int8', dims), pv = g.input('past_value', 'int8', dims);
  const half = HS / 2;
  const cos = new Float32Array(CAP * half).fill(1), sin = new Float32Array(CAP * half);
  const [attn, prk, prv] = g.node('GroupQueryAttention', [
    qkv, '', '', kvPastToFloat(g, pk, 'transformer.layers.0', weights), kvPastToFloat(g, pv, 'transformer.layers.0', weights),
    g.input('seqlens_k', 'int32', [1]), g.input('total_sequence_length', 'int32', []),
    g.constant('cos', 'float32', [CAP, half], new Uint8Array(cos.buffer)), g.constant('sin', 'float32', [CAP, half], new Uint8Array(sin.buffer)),
  ], 3, { num_heads: NH, kv_num_heads: KVH, scale: { float: 1 / Math.sqrt(HS) }, do_rotary: 1, rotary_interleaved: 0, local_window_size: -1 }, MS);
  kvPresentToInt8(g, prk, 'present_key', 'transformer.layers.0', weights);
  kvPresentToInt8(g, prv, 'present_value', 'transformer.layers.0', weights);
  g.output(attn, 'float32', [1, 'seq', NH * HS]);
  g.output('present_key', 'int8', dims);
  g.output('present_value', 'int8', dims);
  const r = rand(5);
  const data = Float32Array.from({ length: 3 * (NH + 2 * KVH) * HS }, () => r());
  const n = KVH * CAP * HS;
  return {
    name: 'int8 KV cache (INT8) around GroupQueryAttention', graph: g.encode(), weights: await bytesOf(wf), output: attn,
    feeds: () => ({
      qkv: new ort.Tensor('float32', data, [1, 3, (NH + 2 * KVH) * HS]),
      past_key: new ort.Tensor('int8', new Int8Array(n), dims), past_value: new ort.Tensor('int8', new Int8Array(n), dims),
      seqlens_k: new ort.Tensor('int32', Int32Array.of(2), [1]), total_sequence_length: new ort.Tensor('int32', Int32Array.of(3), []),
    }),
  };
}

export interface OpSupport { kernel: string; ep: string; runs_on_ep_alone: boolean; error?: string; rel_err_vs_cpu?: number }

async function open(p: Probe, dir: string, eps: string[], noFallback: boolean, logLevel: 0 | 4 = 4): Promise<ort.InferenceSession> {
  writeFileSync(join(dir, 'w.bin'), p.weights);
  writeFileSync(join(dir, 'm.onnx'), p.graph);
  return ort.InferenceSession.create(join(dir, 'm.onnx'), {
    executionProviders: eps as never,
    logSeverityLevel: logLevel,
    ...(noFallback ? { extra: { session: { disable_cpu_ep_fallback: '1' } } } : {}),
  });
}

export async function probeQuantKernels(ep: string, verbose = false): Promise<OpSupport[]> {
  const probes = [
    await linearProbe('int8_wo'), await linearProbe('int4_wo'), await linearProbe('int4_awq'), await linearProbe('w4a8_awq'),
    await linearProbe('w8a8_sq', { sqActivations: 'per-token' }), await linearProbe('w8a8_sq', { sqActivations: 'per-tensor' }),
    await linearProbe('fp8'), await kvProbe(),
  ];
  const out: OpSupport[] = [];
  for (const p of probes) {
    const dir = mkdtempSync(join(tmpdir(), 'tprun-probe-'));
    const res: OpSupport = { kernel: p.name, ep, runs_on_ep_alone: false };
    try {
      const cpu = await open(p, dir, ['cpu'], false);
      const want = (await cpu.run(p.feeds()))[p.output].data as Float32Array;
      await cpu.release();
      try {
        const s = await open(p, dir, [ep], ep !== 'cpu');
        res.runs_on_ep_alone = true;
        const got = (await s.run(p.feeds()))[p.output].data as Float32Array;
        let num = 0, den = 0;
        for (let i = 0; i < want.length; i++) { num += (got[i] - want[i]) ** 2; den += want[i] ** 2; }
        res.rel_err_vs_cpu = Math.sqrt(num / den);
        await s.release();
      } catch (e) {
        res.error = (e as Error).message.split('\n')[0].slice(0, 300);
        // With fallback allowed and verbose logs, onnxruntime names the nodes it placed on the CPU
        // ("Node(s) placed on [CPUExecutionProvider]") on stderr; the result is compared all the same.
        if (verbose) {
          process.stderr.write(`--- ${p.name} on ${ep} with CPU fallback ---\n`);
          const s = await open(p, dir, [ep, 'cpu'], false, 0);
          const got = (await s.run(p.feeds()))[p.output].data as Float32Array;
          let num = 0, den = 0;
          for (let i = 0; i < want.length; i++) { num += (got[i] - want[i]) ** 2; den += want[i] ** 2; }
          res.rel_err_vs_cpu = Math.sqrt(num / den);
          await s.release();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    out.push(res);
  }
  return out;
}

