// Which linears build_config.prefill_int8_gemm turns into an If (../quantization/onnx-linear.ts emitWeightOnlyPerChannel),
// in one place: the emitter and the refusal (build-config.ts prefillInt8GemmRefusal) both read
// it. A module of its own with no imports, because build-config.ts loads in every rank and onnx-linear.ts
// only in builds of quantized models.

/** The build options the rule reads (engine dtype, int4 MatMulNBits activation dtype, device). */
export interface PrefillGemmConfig { device?: 'cpu' | 'gpu'; dtype?: 'float32' | 'float16'; int4_matmul_dtype?: 'float32' | 'auto' }

/** Per-channel weight-only schemes: one scale per output row, so one int8 [K, N] copy serves an integer GEMM. */
export function perChannelWeightOnly(algo: string | null | undefined): boolean {
  return algo === 'W8A16' || algo === 'W4A16';
}

/**
 * int4 weight-only MatMulNBits fed float16 activations and scales directly (no Cast pair), as a float16
 * engine with int4_matmul_dtype 'auto' asks.
 */
export function int4Direct(cfg: Pick<PrefillGemmConfig, 'dtype' | 'int4_matmul_dtype'>, algo: string | null | undefined): boolean {
  return cfg.int4_matmul_dtype === 'auto' && cfg.dtype === 'float16' && (algo === 'W4A16' || algo === 'W4A16_AWQ');
}

/**
 * Whether a prefill_int8_gemm build of quant_algo `algo` gets its If: per-channel weight-only linears with
 * float32 scales (the integer GEMM's per-row rescale is float32), on the CPU (the WGSL kernels find their
 * weights by MatMulNBits nodes, which If bodies hide).
 */
export function prefillGemmApplies(cfg: PrefillGemmConfig, algo: string | null | undefined): boolean {
  return cfg.device === 'cpu' && perChannelWeightOnly(algo) && !int4Direct(cfg, algo);
}
