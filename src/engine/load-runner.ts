// The runner a command asked for (--kernels) and the generation loop that goes with it, in one place for
// generate, perplexity and bench generate. Both runners load lazily: onnxruntime and Dawn only where used.
import type { DeviceRequest } from './device.js';
import type { Engine } from './engine.js';
import type { GenerateOptions, GenerateResult } from './generate.js';
import type { EngineRunner } from './runtime.js';
import type { WgslRunner } from './wgsl/runner.js';
import type { World } from '../rank/types.js';

export type Kernels = 'ort' | 'wgsl';

export interface LoadedRunner {
  runner: EngineRunner | WgslRunner;
  generate(prompts: number[][], opts: GenerateOptions): Promise<GenerateResult>;
}

export async function loadRunner(engine: Engine, world: World, o: { kernels?: Kernels; device?: DeviceRequest; threads?: number }): Promise<LoadedRunner> {
  if (o.kernels === 'wgsl') {
    const { WgslRunner, generateWgsl } = await import('./wgsl/index.js');
    const runner = await WgslRunner.load(engine, world, { device: o.device });
    return { runner, generate: (p, g) => generateWgsl(runner, p, g) };
  }
  const [{ EngineRunner }, { generate }] = await Promise.all([import('./runtime.js'), import('./generate.js')]);
  const runner = await EngineRunner.load(engine, world, { threads: o.threads, device: o.device });
  return { runner, generate: (p, g) => generate(runner, p, g) };
}
