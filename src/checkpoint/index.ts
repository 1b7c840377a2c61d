// Public surface of checkpoints (file formats and loaders), re-exported by src/index.ts.
export type { LoadOptions } from './open.js';
export { SafetensorsFile, SafetensorsWriter, readSafetensors, writeSafetensors } from './safetensors.js';
export { MemorySource, readSelection, llamaTensorNames, type TensorSource } from './source.js';
export { planRank, produceShards, rankSource, shardContext } from './shard.js';
export { TllmSource, readTllmConfig, writeConfig, rankFile } from './tllm.js';
export { generateCheckpoint, PRESETS, type GenerateOptions } from './generate.js';
export { convertRank, validateConvert, type ConvertOptions } from './convert.js';
