// The engine layer's library surface: build(model, buildConfig) → Engine (save / fromDir), and running it.
export { build, Engine, engineWorldSize, type EngineConfig, type ModelShard } from './engine.js';
export { resolveBuildConfig, type BuildConfig } from './build-config.js';
export { EngineRunner, KvCache, type ForwardRequest, type RunnerOptions } from './runtime.js';
export { generate, newTokenBudget, type GenerateOptions as GenerationOptions, type GenerateResult } from './generate.js';
export { perplexity, perplexityTokens, type PerplexityResult } from './perplexity.js';
export { loadTokenizer, type TextTokenizer } from './tokenizer.js';
export type { SamplingOptions } from './sampling.js';
