// A rank program for the sub-group tests (World.newGroup): `node group-app.js SCENARIO`, 4 ranks.
// Inputs are small integers that depend on the world rank, so each rank computes the exact result of
// every group collective from the members' world ranks and fails loudly on the first difference.
import assert from 'node:assert/strict';
import { initWorld } from '../../dist/rank/world.js';

const [scenario = 'groups'] = process.argv.slice(2);
const world = await initWorld({ timeoutMs: Number(process.env.APP_TIMEOUT_MS ?? 20000) });
const me = world.rank;
const val = (r, i) => ((r * 7 + i * 3) % 11) - 5;
const input = (C, r, n) => C.from({ length: n }, (_, i) => val(r, i));
const sumOver = (ranks, n, f = (r) => r) => Array.from({ length: n }, (_, i) => ranks.reduce((t, r) => t + val(f(r), i), 0));

async function checkGroup(g, tag) {
  const { ranks } = g;
  const small = input(Float32Array, me, 33);
  const big = input(Float32Array, me, 200_001); // past the one-hop size: reduce-scatter then all-gather
  const root = g.size - 1; // a group rank: world rank ranks[root]
  const bc = g.rank === root ? input(Int32Array, 100 + me, 50) : new Int32Array(50);
  // Issued together: the group's collectives pair by call order, whatever else runs meanwhile.
  const [s, b, ag, , obj, rs, ga] = await Promise.all([
    g.allReduce(small), g.allReduce(big), g.allGather(input(Int32Array, me, 4)), g.broadcast(bc, root),
    g.broadcastObject(g.rank === 0 ? { tag, from: me } : undefined, 0),
    g.reduceScatter(input(Float64Array, me, g.size * 3), 'max'), g.gather(input(Int8Array, me, 2), root), g.barrier(),
  ]);
  assert.deepEqual(Array.from(s), sumOver(ranks, 33), `${tag}: small allReduce`);
  const want = sumOver(ranks, 200_001);
  for (let i = 0; i < big.length; i += 997) assert.equal(b[i], want[i], `${tag}: big allReduce at ${i}`);
  assert.deepEqual(Array.from(ag), ranks.flatMap((r) => Array.from(input(Int32Array, r, 4))), `${tag}: allGather in group order`);
  assert.deepEqual(Array.from(bc), Array.from(input(Int32Array, 100 + ranks[root], 50)), `${tag}: broadcast from group rank ${root}`);
  assert.deepEqual(obj, { tag, from: ranks[0] }, `${tag}: broadcastObject`);
  const maxes = Array.from({ length: g.size * 3 }, (_, i) => Math.max(...ranks.map((r) => val(r, i))));
  assert.deepEqual(Array.from(rs), maxes.slice(g.rank * 3, g.rank * 3 + 3), `${tag}: reduceScatter`);
  if (g.rank === root) assert.deepEqual(Array.from(ga), ranks.flatMap((r) => Array.from(input(Int8Array, r, 2))), `${tag}: gather`);
  else assert.equal(ga, undefined);
}

if (scenario === 'groups') {
  assert.equal(world.size, 4);
  // Every rank creates every group, in the same order (torch.distributed.new_group's rule).
  const pair = [world.newGroup([0, 1]), world.newGroup([2, 3])];
  const across = world.newGroup([3, 1]); // shares a rank with each pair, in reverse order
  const all = world.newGroup([3, 2, 1, 0]);
  const mine = pair[me < 2 ? 0 : 1];
  const other = pair[me < 2 ? 1 : 0];
  assert.deepEqual([mine.size, mine.rank, other.rank], [2, me % 2, -1]);
  // Not a member: refused at once, naming the rank and the group, and nothing is sent or consumed.
  await assert.rejects(other.allReduce(new Float32Array(4)), { name: 'CommError', message: /rank \d is not a member .*world ranks [0-3], [0-3]/ });
  await assert.rejects(other.barrier(), /is not a member/);
  // Both pairs at once, with a world collective in flight on every rank.
  const [w] = await Promise.all([world.allReduce(input(Float32Array, me, 10)), checkGroup(mine, `pair ${me < 2 ? 0 : 1}`)]);
  assert.deepEqual(Array.from(w), sumOver([0, 1, 2, 3], 10), 'world allReduce beside the groups');
  if (across.rank >= 0) await checkGroup(across, 'across');
  await checkGroup(all, 'all reversed');
  assert.throws(() => world.newGroup([0, 0]), /name a rank twice/);
  assert.throws(() => world.newGroup([1, 4]), /rank 4 is not in 0\.\.3/);
  assert.throws(() => world.newGroup([]), /non-empty/);
  await world.barrier();
  console.log(JSON.stringify({ rank: me, ok: true }));
} else if (scenario === 'group-absent') {
  // World rank 1 never joins group [3, 1]'s barrier: rank 3 times out naming world rank 1.
  const g = world.newGroup([3, 1]);
  if (me === 3) await g.barrier({ timeoutMs: 1500 });
  else await new Promise((r) => setTimeout(r, 4000)); // closing would fail rank 3 sooner, for another reason
}
await world.close();
