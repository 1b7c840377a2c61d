// Public surface of sharding (the tensor-parallel rules, TensorRT-LLM's quantized tensor layout, and the
// cutting and joining of tensors), re-exported by src/index.ts.
export { checkMapping, ppLayerRange, stageTensors, globalName, Mapping as RankMapping } from './mapping.js';
export { ruleFor, selection, contextFromConfig, kvHeadsOf, type ShardContext, type Selection, type Rule } from './rules.js';
export { shardTensor, gatherTensor, sliceTensor } from './slice.js';
export { LINEAR_LAYOUT, NORM_LAYOUT, KV_LAYOUT, TLLM_QUANT_ALGOS, expectedQuantTensors, type TensorSpec, type TllmQuantAlgo } from './tllm-layout.js';
