// Public library surface: `import { initWorld, LlamaForCausalLM, build } from 'tprun'`.
export type * from './rank/types.js';
export { initWorld, detectIdentity, CommError, type InitWorldOptions } from './rank/world.js';
export type * from './core/tensor.js';
export { InputError, isInputError } from './core/errors.js';
export { castTensor, toFloat32, byteSize, numel, ITEMSIZE } from './core/dtype.js';
export type * from './core/config.js';
export * from './sharding/index.js';
export * from './checkpoint/index.js';
export { LlamaForCausalLM } from './model/llama.js';
export { runDistributed, RankFailure } from './launcher/self-launch.js';
export { progress } from './util/progress.js';
export { traceSpan, traceInstant } from './util/trace.js';
export * from './quantization/index.js';
export * from './engine/index.js';
