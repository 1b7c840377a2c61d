// In-memory tensors as every layer sees them: raw little-endian bytes plus dtype and shape.
// Bytes (not typed arrays) are the common currency so that bf16, fp8 and packed int4 need no special case.

export type DType =
  | 'float32' | 'float16' | 'bfloat16' | 'float8_e4m3fn'
  | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool' | 'float64';

export interface Tensor {
  dtype: DType;
  shape: number[];
  /** Exactly numel * itemsize bytes, little-endian, row-major. */
  data: Uint8Array;
}

/** Named tensors of one rank, TensorRT-LLM names (transformer.layers.0.attention.qkv.weight, ...). */
export type Weights = Map<string, Tensor>;
