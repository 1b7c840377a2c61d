// The runner a command asked for (--kernels) and the generation loop that goes with it, in one place for
// generate, perplexity and bench generate. Both runners load lazily: onnxruntime and Dawn only where used.
//
// --kernels auto (the default) runs tprun's WGSL kernels where they run the engine — float16 engines with
// float or MatMulNBits (int4 / int8 weight-only) linears, at any tp × pp, on a GPU device — and onnxruntime
// otherwise (float32 engines, other quantization, --device cpu or an engine built for the CPU without
// --device, no WebGPU adapter). Every rank of the world takes the same choice (all stages alike: the
// hand-offs between stages are the same messages either way, but one rule is simpler to read in figures).
import type { DeviceRequest } from './device.js';
import type { Engine } from './engine.js';
import type { GenerateOptions, GenerateResult } from './generate.js';
import type { EngineRunner } from './runtime.js';
import type { WgslRunner } from './wgsl/runner.js';
import type { World } from '../rank/types.js';
import { traceSpan } from '../util/trace.js';

export type Kernels = 'ort' | 'wgsl';
export type KernelsRequest = Kernels | 'auto';

export interface LoadedRunner {
  runner: EngineRunner | WgslRunner;
  /** Whose kernels run the engine, and why (for --kernels auto). */
  kernels: Kernels;
  reason: string;
  generate(prompts: number[][], opts: GenerateOptions): Promise<GenerateResult>;
}

/** What --kernels auto picks for this engine on this world (every rank the same). */
export async function chooseKernels(engine: Engine, world: World, o: { kernels?: KernelsRequest; device?: DeviceRequest }): Promise<{ kernels: Kernels; reason: string }> {
  const req = o.kernels ?? 'auto';
  if (req !== 'auto') return { kernels: req, reason: 'requested' };
  const device = o.device ?? engine.config.build_config.device;
  if (device === 'cpu') return { kernels: 'ort', reason: o.device ? '--device cpu' : 'the engine was built for the CPU (build_config.device; --device gpu overrides)' };
  const { wgslRefusal } = await import('./wgsl/runner.js');
  const why = wgslRefusal(engine);
  if (why) return { kernels: 'ort', reason: why.replace(/;.*$/, '') };
  // The same Dawn device the WGSL runner then uses: an adapter that opens here is the one it runs on.
  let ok = 1;
  let reason = 'a WebGPU adapter opens on every rank';
  try {
    const { openWgslDevice } = await import('./wgsl/gpu.js');
    await traceSpan('kernels.probe', () => openWgslDevice());
  } catch (e) {
    // --device gpu: onnxruntime's provider then says in its own words why there is no GPU.
    ok = 0;
    reason = `no WebGPU adapter for the WGSL kernels (${String((e as Error).message).split('\n')[0]})`;
  }
  const all = world.size === 1 ? [ok] : await world.allReduce(Int32Array.of(ok), 'min');
  if (all[0] === 1) return { kernels: 'wgsl', reason };
  return { kernels: 'ort', reason: ok ? 'another rank has no WebGPU adapter for the WGSL kernels' : reason };
}

export async function loadRunner(engine: Engine, world: World, o: { kernels?: KernelsRequest; device?: DeviceRequest; threads?: number }): Promise<LoadedRunner> {
  const { kernels, reason } = await chooseKernels(engine, world, o);
  if (kernels === 'wgsl') {
    const { WgslRunner, generateWgsl } = await import('./wgsl/index.js');
    const runner = await WgslRunner.load(engine, world, { device: o.device });
    return { runner, kernels, reason, generate: (p, g) => generateWgsl(runner, p, g) };
  }
  const [{ EngineRunner }, { generate }] = await Promise.all([import('./runtime.js'), import('./generate.js')]);
  const runner = await EngineRunner.load(engine, world, { threads: o.threads, device: o.device });
  return { runner, kernels, reason, generate: (p, g) => generate(runner, p, g) };
}
