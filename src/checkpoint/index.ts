// Public surface of checkpoints and sharding, re-exported by src/index.ts.
export { LlamaForCausalLM, type LoadOptions } from '../model/llama.js';
export { InputError, isInputError } from './errors.js';
export { SafetensorsFile, SafetensorsWriter, readSafetensors, writeSafetensors } from './safetensors.js';
export { castTensor, toFloat32, byteSize, numel, ITEMSIZE } from './dtype.js';
export { MemorySource, readSelection, llamaTensorNames, type TensorSource } from './source.js';
export { planRank, produceShards, rankSource, shardContext } from './shard.js';
export { checkMapping, ppLayerRange, stageTensors, globalName, Mapping as RankMapping } from '../sharding/mapping.js';
export { TllmSource, readTllmConfig, writeConfig, rankFile } from './tllm.js';
export { ruleFor, selection, contextFromConfig, kvHeadsOf, type ShardContext, type Selection, type Rule } from '../sharding/rules.js';
export { shardTensor, gatherTensor, sliceTensor } from '../sharding/slice.js';
export { generateCheckpoint, PRESETS, type GenerateOptions } from './generate.js';
export { convertRank, validateConvert, type ConvertOptions } from './convert.js';
