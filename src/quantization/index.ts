// Public quantization API (re-exported by src/index.ts).
export { QUANT_ALGOS, TRTLLM_QUANT_ALGO, type QuantAlgo, type QuantOptions, type QuantRequest } from './algorithms.js';
export { quantizeAndDistribute, quantizeFullModel, convertQuantized, type QuantizeSource } from './distribute.js';
export { quantizeWeights, quantConfigFor } from './quantize-model.js';
export { encodeE4M3, decodeE4M3, quantizeFp8, dequantizeFp8 } from './fp8.js';
export { quantizeInt8PerChannel, quantizeInt4Grouped, dequantizeInt8PerChannel, dequantizeInt4Grouped } from './weights.js';
export { smoothingFactors } from './smoothquant.js';
export { awqQuantize } from './awq.js';
