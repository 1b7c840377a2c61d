// Public library surface: `import { initWorld, LlamaForCausalLM, build } from 'tprun'`.
export type * from './rank/types.js';
export type * from './checkpoint/tensor.js';
export type * from './model/config.js';
export * from './checkpoint/index.js';
