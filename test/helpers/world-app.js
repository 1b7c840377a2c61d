// A rank program for the world tests: `node world-app.js SCENARIO [args]`, started once per rank.
// Each rank computes what every collective must return from the inputs of all ranks (a sequential
// reference: inputs are a function of rank and index) and fails loudly on the first difference.
import assert from 'node:assert/strict';
import { initWorld, LlamaForCausalLM } from 'tprun';
import { f32ToBf16, f32ToF16, toF32 } from '../../dist/rank/dtype.js';

const [scenario = 'all', arg = ''] = process.argv.slice(2);
// Tests block this rank's event loop on demand (SIGUSR2), as a rank busy in a long synchronous step
// would: 'blocked' on stderr says it has begun.
if (process.env.APP_BLOCK_MS) {
  process.on('SIGUSR2', () => {
    process.stderr.write('app: blocked\n');
    const end = Date.now() + Number(process.env.APP_BLOCK_MS);
    while (Date.now() < end) { /* busy */ }
    process.stderr.write('app: unblocked\n');
  });
}
if (process.env.APP_DELAY_MS) await new Promise((r) => setTimeout(r, Number(process.env.APP_DELAY_MS)));
const world = await initWorld({ timeoutMs: Number(process.env.APP_TIMEOUT_MS ?? 20000) });
const { rank: me, size: R } = world;

// Small integers: sums are exact in every float type, whatever the order.
const val = (r, i) => ((r * 7 + i * 3) % 11) - 5;
const input = (C, r, n) => C.from({ length: n }, (_, i) => val(r, i));
const refReduce = (op, n, f = (x) => x) => Array.from({ length: n }, (_, i) => {
  let acc = f(val(0, i));
  for (let r = 1; r < R; r++) acc = op === 'sum' ? acc + f(val(r, i)) : op === 'max' ? Math.max(acc, f(val(r, i))) : Math.min(acc, f(val(r, i)));
  return acc;
});

async function collectives() {
  await world.barrier();
  for (const [C, n] of /** @type {const} */ ([[Float32Array, 5], [Float32Array, 70001], [Float64Array, 33], [Int32Array, 1000], [Int8Array, 17], [Uint8Array, 9]])) {
    for (const op of /** @type {const} */ (['sum', 'max', 'min'])) {
      const f = C === Uint8Array ? (x) => x & 0xff : C === Int8Array ? (x) => x : (x) => x;
      const buf = input(C, me, n);
      await world.allReduce(buf, op);
      let want = refReduce(op, n, f);
      if (C === Uint8Array || C === Int8Array) want = Array.from(C.from(want));
      assert.deepEqual(Array.from(buf), want, `allReduce ${op} ${C.name}[${n}]`);
    }
  }
  for (const [dtype, enc] of /** @type {const} */ ([['float16', f32ToF16], ['bfloat16', f32ToBf16]])) {
    for (const n of [7, 50000]) {
      const buf = Uint16Array.from({ length: n }, (_, i) => enc(val(me, i) * 0.5));
      await world.allReduce(buf, 'sum', { dtype });
      assert.deepEqual(Array.from(toF32(buf, dtype)), refReduce('sum', n, (x) => x * 0.5), `allReduce ${dtype}[${n}]`);
    }
  }
  for (const root of [0, R - 1]) {
    const b = me === root ? input(Float32Array, 100 + root, 3000) : new Float32Array(3000);
    await world.broadcast(b, root);
    assert.deepEqual(Array.from(b), Array.from(input(Float32Array, 100 + root, 3000)), `broadcast from ${root}`);
  }
  const g = await world.allGather(input(Int32Array, me, 4));
  assert.deepEqual(Array.from(g), Array.from({ length: R * 4 }, (_, k) => val(Math.floor(k / 4), k % 4)), 'allGather');
  const root = Math.floor(R / 2);
  const gg = await world.gather(input(Float64Array, me, 3), root);
  if (me === root) assert.deepEqual(Array.from(gg), Array.from({ length: R * 3 }, (_, k) => val(Math.floor(k / 3), k % 3)), 'gather');
  else assert.equal(gg, undefined);
  const pieces = me === root ? Array.from({ length: R }, (_, r) => input(Float32Array, 50 + r, 6)) : undefined;
  const sc = await world.scatter(pieces, root, new Float32Array(6));
  assert.deepEqual(Array.from(sc), Array.from(input(Float32Array, 50 + me, 6)), 'scatter');
  const rs = await world.reduceScatter(input(Float32Array, me, R * 5), 'sum');
  assert.deepEqual(Array.from(rs), refReduce('sum', R * 5).slice(me * 5, me * 5 + 5), 'reduceScatter');
  // Point to point around a ring, two tags received in the opposite order of sending.
  const next = (me + 1) % R, prev = (me + R - 1) % R;
  await Promise.all([world.send(input(Float32Array, me, 10), next, 1), world.send(input(Float32Array, me + 10, 20), next, 2)]);
  const r2 = await world.recv(prev, 2, new Float32Array(20));
  const r1 = new Float32Array((await world.recv(prev, 1)).slice().buffer);
  assert.deepEqual(Array.from(r2), Array.from(input(Float32Array, prev + 10, 20)), 'recv tag 2');
  assert.deepEqual(Array.from(r1), Array.from(input(Float32Array, prev, 10)), 'recv tag 1');
  await world.sendObject({ from: me, list: [1, 'two'] }, next, 7);
  assert.deepEqual(await world.recvObject(prev, 7), { from: prev, list: [1, 'two'] }, 'recvObject');
  const cfg = await world.broadcastObject(me === 0 ? { hidden: 256, name: 'x' } : undefined, 0);
  assert.deepEqual(cfg, { hidden: 256, name: 'x' }, 'broadcastObject');
  // A big allReduce through the chunked path (more than one shared-memory slot per peer).
  const big = input(Float32Array, me, 1_300_001);
  await world.allReduce(big);
  const want = refReduce("sum", 1_300_001);
  for (let i = 0; i < big.length; i += 9973) assert.equal(big[i], want[i], `big allReduce at ${i}`);
  // Reductions issued together (Promise.all) share no scratch memory by accident.
  const [x, y, z] = await Promise.all([world.allReduce(input(Float32Array, me, 300)), world.allReduce(input(Float32Array, me + 1, 40000)), world.allReduce(input(Int32Array, me, 7), 'max')]);
  assert.deepEqual(Array.from(x), refReduce('sum', 300), 'concurrent allReduce 1');
  assert.deepEqual(Array.from(y).slice(0, 50), Array.from({ length: 50 }, (_, i) => { let t = 0; for (let r = 0; r < R; r++) t += val(r + 1, i); return t; }), 'concurrent allReduce 2');
  assert.deepEqual(Array.from(z), refReduce('max', 7), 'concurrent allReduce 3');
  await world.barrier();
  console.log(JSON.stringify({ rank: me, size: R, ok: true, source: world.source }));
}

if (scenario === 'all') await collectives();
else if (scenario === 'die') {
  // Rank `arg` kills itself in the middle of a series of allReduces; the others must fail, naming it.
  const victim = Number(arg);
  const buf = new Float32Array(1024);
  for (let i = 0; ; i++) {
    if (me === victim && i === 50) process.kill(process.pid, 'SIGKILL');
    await world.allReduce(buf);
  }
} else if (scenario === 'absent') {
  // Rank `arg` never joins the barrier; the others must time out naming it.
  if (me !== Number(arg)) await world.barrier({ timeoutMs: 1500 });
  else await new Promise((r) => setTimeout(r, 4000));
} else if (scenario === 'oversize') {
  // Rank 1 accepts at most TPRUN_MAX_MESSAGE_BYTES; rank 0 sends more.
  if (me === 0) await world.send(new Float32Array(1000), 1, 4);
  if (me === 1) await world.recv(0, 4);
} else if (scenario === 'bad-input' || scenario === 'bug') {
  // After the world started, rank 1 meets bad input (a checkpoint directory `arg` that is not there) or a
  // bug of the script's own, and leaves it uncaught; the others idle until the launcher stops them.
  if (me === 1 && scenario === 'bad-input') LlamaForCausalLM.fromCheckpoint(arg, me);
  if (me === 1) /** @type {any} */ (undefined).bug();
  await new Promise((r) => setTimeout(r, 60_000));
} else if (scenario === 'recv-retry') {
  // Rank 1 receives with a timeout before rank 0 has sent, gives up, and tries again: the retry gets the
  // message that was late (not the sender's next one), then the next one in order.
  if (me === 0) {
    await world.barrier();
    await new Promise((r) => setTimeout(r, 600));
    await world.send(new Int32Array([11]), 1, 3);
    await world.send(new Int32Array([22]), 1, 3);
  } else if (me === 1) {
    await world.barrier();
    const got = [];
    for (let tries = 0; got.length < 2 && tries < 50; tries++) {
      try {
        got.push((await world.recv(0, 3, new Int32Array(1), { timeoutMs: 100 }))[0]);
      } catch (e) {
        if (!/timed out/.test(/** @type {Error} */ (e).message)) throw e;
      }
    }
    console.log(JSON.stringify({ got }));
  }
} else if (scenario === 'hello') {
  await world.barrier();
  const s = await world.allReduce(new Int32Array([me + 1]));
  console.log(JSON.stringify({ rank: me, size: R, sum: s[0], source: world.source }));
}
await world.close();
