// --kernels wgsl: hand-written WGSL kernels on Dawn (npm webgpu) instead of onnxruntime's WebGPU provider.
export { WgslRunner, WgslCache } from './runner.js';
export { generateWgsl } from './generate.js';
