// A rank program for the shared-memory allReduce tests: `node shm-allreduce-app.js SCENARIO`.
// 'made': when the areas were set up (at world start or at the first call).
// 'warm': what the world's start ran through the user's allReduce path, then a first call on fractions (the
// sum's bits depend on its order) against the rank-order reference. 'warm-numbering': the first user
// collective disagrees on purpose (its number must be #1).
// 'check': every case against a sequential reference (inputs are a function of rank and index), then one
// JSON line {rank, ok, plane}. 'sync': short calls awaited in turn, one that a peer joins late, and what
// each call's promise held when it came back. 'mismatch-length' / 'mismatch-op': the ranks disagree on
// purpose; 'die': rank 1 exits between two calls.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { initWorld } from '../../dist/rank/world.js';
import { f32ToBf16, f32ToF16, toF32 } from '../../dist/rank/dtype.js';

const [scenario = 'check'] = process.argv.slice(2);
const world = await initWorld({ timeoutMs: Number(process.env.APP_TIMEOUT_MS ?? 40000) });
const { rank: me, size: R } = world;
// The test must know that the path under test ran, not the message path beside it (the plane exists
// from the first call through the areas on).
/** @type {{ plane?: { kind: string }, step: number, rung: number, wasmCalls: number, warmCalls?: number, planeMade?: string, warmed?: boolean } | undefined} the world's own, not in its public type */
const shar = /** @type {any} */ (world).shar;
// Whether the areas were set up when the world started (ShmAllReduce.prepare), before any call wanted them.
const madeBefore = shar?.planeMade ?? 'none';
if (scenario === 'warm') {
  // Before any call of this program: the calls the world's start made through the areas' wasm call (its
  // first exchange, then the warm-up).
  const before = { warmCalls: shar?.warmCalls ?? 0, wasmCalls: shar?.wasmCalls ?? 0 };
  // Inputs a function of rank and index, fractions whose float32 sum rounds: the reference adds them in
  // rank order in float32, as every rank reduces.
  const x = (r, i) => Math.fround(Math.sin(r * 7919 + i * 104729) * 1000.123);
  const n = 300;
  const buf = Float32Array.from({ length: n }, (_, i) => x(me, i));
  await world.allReduce(buf);
  let ok = true;
  for (let i = 0; i < n; i++) {
    let acc = x(0, i);
    for (let r = 1; r < R; r++) acc = Math.fround(acc + x(r, i));
    if (buf[i] !== acc) ok = false;
  }
  await world.close();
  console.log(JSON.stringify({ rank: me, ...before, plane: shar?.plane?.kind ?? 'none', bitExact: ok }));
  process.exit(0);
}
if (scenario === 'warm-numbering') {
  await world.allReduce(new Float32Array(16), me === 0 ? 'sum' : 'max');
  process.exit(0);
}
await world.allReduce(new Float32Array(1));
const plane = shar?.plane?.kind ?? 'none';

// Small integers: sums are exact in float32 and float16 whatever the order.
const val = (r, i) => ((r * 7 + i * 3) % 11) - 5;
const ref = (op, i) => {
  let acc = val(0, i);
  for (let r = 1; r < R; r++) acc = op === 'sum' ? acc + val(r, i) : op === 'max' ? Math.max(acc, val(r, i)) : Math.min(acc, val(r, i));
  return acc;
};

function checkAll(got, op, what, scale = 1) {
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== ref(op, i) * scale) assert.fail(`${what}: element ${i} is ${got[i]}, want ${ref(op, i) * scale} (rank ${me} of ${R})`);
  }
}

if (scenario === 'check') {
  // Lengths around the step (TPRUN_SHM_AR_STEP), not divisible by the rank count, one element, and big.
  const step = shar?.step ?? 65536;
  const sizes = [1, R - 1, 16385, 16384 * R + 1, step / 4 + 1, (3 * step) / 4 - 1, 5 * step / 4 + 7];
  for (const n of sizes) {
    for (const op of /** @type {const} */ (['sum', 'max', 'min'])) {
      const buf = Float32Array.from({ length: n }, (_, i) => val(me, i));
      await world.allReduce(buf, op);
      checkAll(buf, op, `float32 ${op} [${n}]`);
    }
    const h = Uint16Array.from({ length: n }, (_, i) => f32ToF16(val(me, i) * 0.5));
    await world.allReduce(h, 'sum', { dtype: 'float16' });
    checkAll(toF32(h, 'float16'), 'sum', `float16 sum [${n}]`, 0.5);
    const d = Float64Array.from({ length: n }, (_, i) => val(me, i));
    await world.allReduce(d, 'max');
    checkAll(d, 'max', `float64 max [${n}]`);
    const bf = Uint16Array.from({ length: n }, (_, i) => f32ToBf16(val(me, i) * 0.25));
    await world.allReduce(bf, 'sum', { dtype: 'bfloat16' });
    checkAll(toF32(bf, 'bfloat16'), 'sum', `bfloat16 sum [${n}]`, 0.25);
    const i8 = Int8Array.from({ length: n }, (_, i) => val(me, i));
    await world.allReduce(i8, 'sum');
    checkAll(i8, 'sum', `int8 sum [${n}]`);
    // uint8 and int32: values shifted to be non-negative, then back, so one reference serves.
    const u8 = Uint8Array.from({ length: n }, (_, i) => val(me, i) + 5);
    await world.allReduce(u8, 'max');
    checkAll(Array.from(u8, (x) => x - 5), 'max', `uint8 max [${n}]`);
    const i32 = Int32Array.from({ length: n }, (_, i) => val(me, i));
    await world.allReduce(i32, 'min');
    checkAll(i32, 'min', `int32 min [${n}]`);
  }
  // reduceScatter through the areas too: one piece, odd chunk lengths, several steps.
  for (const k of [1, 7, 1001, step / 4 + 5, Math.floor(step / 2 / R) + 3]) {
    const f = Float32Array.from({ length: k * R }, (_, i) => val(me, i));
    const out = await world.reduceScatter(f, 'sum');
    assert.equal(out.length, k);
    for (let i = 0; i < k; i++) if (out[i] !== ref('sum', me * k + i)) assert.fail(`reduceScatter float32 [${k} x ${R}]: element ${i} is ${out[i]}, want ${ref('sum', me * k + i)}`);
    const h = Uint16Array.from({ length: k * R }, (_, i) => f32ToF16(val(me, i) * 0.5));
    const hout = toF32(await world.reduceScatter(h, 'sum', { dtype: 'float16' }), 'float16');
    for (let i = 0; i < k; i++) if (hout[i] !== ref('sum', me * k + i) * 0.5) assert.fail(`reduceScatter float16 [${k} x ${R}]: element ${i} is ${hout[i]}`);
    const n32 = Int32Array.from({ length: k * R }, (_, i) => val(me, i));
    const iout = await world.reduceScatter(n32, 'max');
    for (let i = 0; i < k; i++) if (iout[i] !== ref('max', me * k + i)) assert.fail(`reduceScatter int32 max [${k} x ${R}]: element ${i} is ${iout[i]}`);
  }
  // Calls that fit one step and calls that take several, queued together and alternating, while a group
  // (its own message path) reduces at the same time: no call may see another's data.
  const group = world.newGroup(Array.from({ length: R }, (_, r) => R - 1 - r));
  const bigLen = step / 4 * 2 + 3;
  for (let k = 0; k < 20; k++) {
    const bufs = [257, bigLen, 1, 4099].map((n) => Float32Array.from({ length: n }, (_, i) => val(me, i)));
    const g = Float32Array.from({ length: 1000 + k }, (_, i) => val(me, i));
    const rs = Float32Array.from({ length: 30 * R }, (_, i) => val(me, i));
    const [rsOut] = await Promise.all([world.reduceScatter(rs, 'sum'), ...bufs.map((b) => world.allReduce(b, k % 2 ? 'max' : 'sum')), group.allReduce(g, 'min')]);
    for (let i = 0; i < 30; i++) if (rsOut[i] !== ref('sum', me * 30 + i)) assert.fail(`reduceScatter in a queue, round ${k}: element ${i} is ${rsOut[i]}`);
    for (const b of bufs) checkAll(b, k % 2 ? 'max' : 'sum', `float32 [${b.length}] in a queue, round ${k}`);
    checkAll(g, 'min', `group float32 min [${g.length}], round ${k}`);
  }
  // The same buffer again and again: results must not depend on what the areas held before.
  const again = new Int32Array(100003);
  for (let k = 0; k < 3; k++) {
    for (let i = 0; i < again.length; i++) again[i] = val(me, i);
    await world.allReduce(again, 'sum');
    checkAll(again, 'sum', `int32 sum, call ${k}`);
  }
  // 64 MiB of float32.
  const big = new Float32Array(16 << 20);
  for (let i = 0; i < big.length; i++) big[i] = val(me, i);
  await world.allReduce(big, 'sum');
  checkAll(big, 'sum', 'float32 sum [64 MiB]');
  await world.close();
  console.log(JSON.stringify({ rank: me, ok: true, plane }));
} else if (scenario === 'made') {
  // Only the pages short calls touch are populated at set-up (shortSpans), on every mapped plane: the
  // areas' pages in this process's page tables (Rss of the ring files' mappings) after a short call are
  // under half of the areas' bytes (R areas of 4 steps each; before, MAP_POPULATE of whole areas on the
  // mmap plane: all of it). Then a pipelined call: the parts left unpopulated work.
  let rss = 0;
  let inRing = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inRing = line.includes('/dev/shm/tprun-');
    else if (inRing && line.startsWith('Rss:')) rss += Number(/\d+/.exec(line)?.[0] ?? 0) * 1024;
  }
  const lazy = plane === 'pread' || rss < (R * (4096 + 4 * (shar?.step ?? 0))) / 2;
  const long = new Float32Array(3 * 65536 + 5).fill(me + 1);
  await world.allReduce(long);
  if (!long.every((x) => x === (R * (R + 1)) / 2)) assert.fail(`rank ${me}: the long call's sum is wrong`);
  await world.close();
  console.log(JSON.stringify({ rank: me, plane, madeBefore, made: shar?.planeMade ?? 'none', warmed: shar?.warmed ?? false, lazy: lazy || `${rss} bytes populated` }));
} else if (scenario === 'sync') {
  // A short call may complete before it returns (ShmAllReduce.now): then `buf` already holds the result
  // when allReduce hands back its promise. Reported, not asserted here: the test decides per plane.
  // wasmCalls counts this program's calls only (not the world's start's).
  const wasmBefore = shar?.wasmCalls ?? 0;
  const buf = new Float32Array(255);
  const want = (k) => (R * (R + 1)) / 2 + R * k;
  const check = (k) => {
    for (let i = 0; i < buf.length; i++) if (buf[i] !== want(k)) assert.fail(`call ${k}: element ${i} is ${buf[i]}, want ${want(k)} (rank ${me} of ${R})`);
  };
  // Calls k0..k1-1, each awaited straight after it starts, as a decode loop does (no other await between
  // them, which would hide a call left queued behind the one before); how many were complete on return.
  const calls = async (k0, k1) => {
    let done = 0;
    for (let k = k0; k < k1; k++) {
      buf.fill(me + 1 + k);
      const p = world.allReduce(buf);
      if (buf[0] === want(k) && buf[254] === want(k)) done++;
      await p;
      check(k);
    }
    return done;
  };
  const sync = await calls(0, 500);
  // The fallback: rank 0 enters a call that its peers join only 50 ms later, long past the spin; its call
  // must come back pending and complete when they arrive.
  await world.barrier();
  if (me !== 0) await new Promise((res) => setTimeout(res, 50));
  buf.fill(me + 1 + 500);
  const p = world.allReduce(buf);
  const late = buf[0] === want(500);
  await p;
  check(500);
  // Calls after that fallback are synchronous again (nothing left queued).
  const after = await calls(501, 1000);
  // Mixed dtypes and lengths in turn (each changes the views oneShot keeps), and a call that takes steps.
  for (let k = 0; k < 50; k++) {
    const n = [1, 7, 255, 4096][k % 4];
    const d = Float64Array.from({ length: n }, (_, i) => val(me, i + k));
    const i8 = Int8Array.from({ length: n + 1 }, (_, i) => val(me, i));
    const [pd, pi] = [world.allReduce(d, 'max'), world.allReduce(i8, 'min')];
    await Promise.all([pd, pi]);
    for (let i = 0; i < n; i++) if (d[i] !== ref('max', i + k)) assert.fail(`float64 max [${n}], round ${k}: element ${i} is ${d[i]}`);
    checkAll(i8, 'min', `int8 min [${n + 1}], round ${k}`);
  }
  await world.close();
  console.log(JSON.stringify({ rank: me, ok: true, plane, sync, late, after, rung: shar?.rung ?? 0, wasmCalls: (shar?.wasmCalls ?? 0) - wasmBefore }));
} else if (scenario === 'die') {
  // Rank 1 dies between two large allReduces: the others must fail naming it, long before their timeout.
  const buf = new Float32Array(1 << 22);
  await world.allReduce(buf, 'sum');
  if (me === 1) process.exit(3);
  await world.allReduce(buf, 'sum');
  console.log(JSON.stringify({ rank: me, ok: true, plane }));
} else if (scenario === 'close-while-waiting') {
  // Rank 0 closes its world while its own short allReduce waits for rank 1, which joins only later: the
  // call must fail naming itself, not with the error of a file the close released.
  if (me === 0) {
    const call = world.allReduce(new Float32Array(256)).then(() => 'completed', (e) => `${e.constructor.name}: ${e.message}`);
    await new Promise((res) => setTimeout(res, 200));
    await world.close();
    console.log(JSON.stringify({ rank: me, ok: true, plane, call: await call }));
  } else {
    await new Promise((res) => setTimeout(res, 1500));
    await world.close().catch(() => {});
    console.log(JSON.stringify({ rank: me, ok: true, plane }));
  }
} else if (scenario === 'mismatch-length') {
  await world.allReduce(new Float32Array(me === 0 ? 100000 : 100004), 'sum');
  console.log(JSON.stringify({ rank: me, ok: true, plane }));
} else if (scenario === 'mismatch-small-length') {
  await world.allReduce(new Float32Array(me === 0 ? 1000 : 1004), 'sum');
  console.log(JSON.stringify({ rank: me, ok: true, plane }));
} else if (scenario === 'mismatch-op') {
  await world.allReduce(new Float32Array(100000), me === 0 ? 'sum' : 'max');
  console.log(JSON.stringify({ rank: me, ok: true, plane }));
}
