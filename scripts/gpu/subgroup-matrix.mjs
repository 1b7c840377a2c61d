// What Dawn's experimental subgroup matrices (WGSL `chromium_experimental_subgroup_matrix`, Vulkan's
// cooperative matrices underneath) offer on this adapter, and whether a GEMM built on them is right and
// how fast it is next to a plain FMA kernel of the same shape: the prefill GEMM of --kernels wgsl is a
// [T, K] x [N, K]^T product (activations row-major, weights one row per output, as the engine stores them).
//   node scripts/gpu/subgroup-matrix.mjs [T K N]    (default 128 2048 2048) → JSON lines on stdout
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const [T, K, N] = (process.argv.length > 4 ? process.argv.slice(2, 5) : ['128', '2048', '2048']).map(Number);
const gpu = create([`enable-dawn-features=${['allow_unsafe_apis', ...(process.env.F16_ON_NVIDIA === '0' ? [] : ['vulkan_enable_f16_on_nvidia'])].join(',')}`]);
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
// The instance must stay reachable to the end: `gpu` is not used again below, and V8 keeps only live
// values across an await, so a GC during the timing loop destroyed Dawn's instance under the device
// (segfault or "The futex facility returned an unexpected error code", at random). Reproduced on lavapipe
// every time with node --expose-gc and gc() between submits; the runtime holds it in WgslDevice.instance.
globalThis.dawnInstance = gpu;
if (!adapter) { console.log(JSON.stringify({ error: 'no adapter' })); process.exit(1); }
const info = adapter.info;
const features = [...adapter.features].sort();
const configs = (info.subgroupMatrixConfigs ?? []).map((c) => ({ component: c.componentType, result: c.resultComponentType, M: c.M, N: c.N, K: c.K }));
console.log(JSON.stringify({ adapter: `${info.vendor} ${info.architecture} ${info.device} ${info.description}`, subgroupMinSize: info.subgroupMinSize, subgroupMaxSize: info.subgroupMaxSize, features, configs }));

const want = ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix'].filter((f) => adapter.features.has(f));
const lim = adapter.limits;
const device = await adapter.requestDevice({
  requiredFeatures: want,
  requiredLimits: { maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize, maxBufferSize: lim.maxBufferSize, maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize, maxComputeInvocationsPerWorkgroup: Math.min(256, lim.maxComputeInvocationsPerWorkgroup) },
});
const mark = (m) => process.env.PROBE_TRACE && process.stderr.write(`probe: ${m} ${performance.now().toFixed(0)}ms\n`);
mark('device');
device.addEventListener('uncapturederror', (ev) => console.log(JSON.stringify({ webgpu_error: ev.error.message.split('\n').slice(0, 6).join(' | ') })));

// Inputs: small integers / 8 so fp16 products and f32 sums are exact and the reference is exact too.
const rnd = (n, seed) => { const a = new Float32Array(n); let s = seed; for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) >>> 0; a[i] = ((s >>> 16) % 9 - 4) / 8; } return a; };
const x = rnd(T * K, 1), w = rnd(N * K, 2);
const toHalf = (a) => { const h = new Uint16Array(a.length); const f = new Float32Array(1), u = new Uint32Array(f.buffer); for (let i = 0; i < a.length; i++) { f[0] = a[i]; const b = u[0]; const e = ((b >>> 23) & 255) - 127 + 15; h[i] = a[i] === 0 ? 0 : ((b >>> 16) & 0x8000) | (e << 10) | ((b >>> 13) & 0x3ff); } return h; };
const buf = (data, usage) => { const b = device.createBuffer({ size: Math.max(16, data.byteLength), usage: usage | GPUBufferUsage.COPY_DST }); device.queue.writeBuffer(b, 0, data); return b; };
const X = buf(toHalf(x), GPUBufferUsage.STORAGE), W = buf(toHalf(w), GPUBufferUsage.STORAGE);
const Y = device.createBuffer({ size: T * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const RB = device.createBuffer({ size: T * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const ref = new Float32Array(T * N);
for (let t = 0; t < T; t += 7) for (let n = 0; n < N; n++) { let s = 0; for (let k = 0; k < K; k++) s += x[t * K + k] * w[n * K + k]; ref[t * N + n] = s; }

async function run(name, code, wg, extra = {}) {
  if (process.env.PROBE_ONLY && !name.includes(process.env.PROBE_ONLY)) return;
  let pipeline;
  mark(`compile ${name}`);
  try {
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code });
    const ci = await module.getCompilationInfo();
    const errs = ci.messages.filter((m) => m.type === 'error');
    if (errs.length) throw new Error(errs.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join(' | '));
    pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const e = await device.popErrorScope();
    if (e) throw new Error(e.message.split('\n')[0]);
  } catch (e) { console.log(JSON.stringify({ kernel: name, error: String(e.message ?? e).slice(0, 600), ...extra })); return; }
  const bg = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [X, W, Y].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const go = (reps) => { const enc = device.createCommandEncoder(); const p = enc.beginComputePass(); p.setPipeline(pipeline); p.setBindGroup(0, bg); for (let i = 0; i < reps; i++) p.dispatchWorkgroups(...wg); p.end(); device.queue.submit([enc.finish()]); return device.queue.onSubmittedWorkDone(); };
  mark('compiled'); await go(1); mark('ran once');
  const enc = device.createCommandEncoder(); enc.copyBufferToBuffer(Y, 0, RB, 0, T * N * 4); device.queue.submit([enc.finish()]);
  mark('copied'); await RB.mapAsync(GPUMapMode.READ); mark('mapped'); const y = new Float32Array(RB.getMappedRange().slice(0)); RB.unmap();
  let bad = 0, first;
  for (let t = 0; t < T; t += 7) for (let n = 0; n < N; n++) if (y[t * N + n] !== ref[t * N + n]) { bad++; first ??= { t, n, got: y[t * N + n], want: ref[t * N + n] }; }
  mark('checked'); await go(3); mark('warm');
  const reps = 50, t0 = performance.now(); await go(reps); const ms = (performance.now() - t0) / reps;
  console.log(JSON.stringify({ kernel: name, T, K, N, ms: +ms.toFixed(4), tflops: +((2 * T * K * N) / ms / 1e9).toFixed(2), tokens_per_s_per_gemm: Math.round(T / ms * 1000), mismatches: bad, first, ...extra }));
}

// Reference: one thread per output, plain f32 FMA over K (what a GEMM without tensor cores is up against).
await run('fma-naive', `enable f16;
@group(0) @binding(0) var<storage, read> X: array<f16>;
@group(0) @binding(1) var<storage, read> W: array<f16>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  let n = g.x; let t = g.y; if (n >= ${N}u) { return; }
  var s = 0.0; for (var k = 0u; k < ${K}u; k++) { s += f32(X[t * ${K}u + k]) * f32(W[n * ${K}u + k]); }
  Y[t * ${N}u + n] = s;
}`, [Math.ceil(N / 64), T, 1]);

// Subgroup matrices: every config Dawn reports with f16 inputs, and SG subgroups per workgroup each owning an
// RT x CT block of result tiles (register blocking), K stepped by the config's K straight from storage.
const sg = info.subgroupMaxSize || 32;
for (const c of configs.filter((c) => c.component === 'f16')) {
  const rt = c.result === 'f32' ? 'f32' : 'f16';
  for (const [RT, CT, SG] of [[1, 1, 1], [2, 2, 4], [4, 2, 4], [2, 4, 4]]) {
    const tileT = c.M * RT, tileN = c.N * CT * SG; // the workgroup's subgroups sit side by side along N
    if (T % tileT || N % tileN || K % c.K) continue;
    const acc = [], body = [], store = [];
    for (let i = 0; i < RT; i++) for (let j = 0; j < CT; j++) acc.push(`var c${i}_${j} = subgroup_matrix_result<${rt}, ${c.N}, ${c.M}>();`);
    for (let i = 0; i < RT; i++) body.push(`let a${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, ${c.K}, ${c.M}>>(&X, (t0 + ${i * c.M}u) * ${K}u + k, false, ${K}u);`);
    for (let j = 0; j < CT; j++) body.push(`let b${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, ${c.N}, ${c.K}>>(&W, (n0 + ${j * c.N}u) * ${K}u + k, true, ${K}u);`);
    for (let i = 0; i < RT; i++) for (let j = 0; j < CT; j++) body.push(`c${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, c${i}_${j});`);
    for (let i = 0; i < RT; i++) for (let j = 0; j < CT; j++) store.push(`subgroupMatrixStore(&Y, (t0 + ${i * c.M}u) * ${N}u + n0 + ${j * c.N}u, c${i}_${j}, false, ${N}u);`);
    const code = `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> X: array<f16>;
@group(0) @binding(1) var<storage, read> W: array<f16>;
@group(0) @binding(2) var<storage, read_write> Y: array<${rt}>;
@compute @workgroup_size(${sg * SG}) fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32, @builtin(subgroup_size) ss: u32) {
  let sid = li / ss;
  let t0 = wg.y * ${tileT}u;
  let n0 = wg.x * ${tileN}u + sid * ${c.N * CT}u;
  ${acc.join('\n  ')}
  for (var k = 0u; k < ${K}u; k += ${c.K}u) {
    ${body.join('\n    ')}
  }
  ${store.join('\n  ')}
}`;
    if (rt !== 'f32') continue; // Y is f32 here; an f16 result config would need its own output buffer
    await run(`subgroup-matrix ${c.M}x${c.N}x${c.K} blocks ${RT}x${CT} sg ${SG}`, code, [N / tileN, T / tileT, 1], { config: c });
  }
}
device.destroy();
await new Promise((r) => process.stdout.write("", r));
process.exit(0);
