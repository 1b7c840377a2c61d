// A rank program for the rank fault tests: `node rank-app.js SCENARIO [arg]`, started once per rank.
// Prints one JSON line per milestone on stdout so tests can follow it from outside.
import { existsSync } from 'node:fs';
import { initWorld } from 'tprun';
import { must } from '../helpers/must.js';

const [scenario = 'hello', arg = ''] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const me0 = Number(process.env.TPRUN_RANK ?? process.env.OMPI_COMM_WORLD_RANK ?? 0);

if (scenario === 'noinit' && me0 === Number(arg)) {
  // This rank never joins: it just lives on (as a rank stuck before initWorld would).
  say({ rank: me0, noinit: true });
  await sleep(Number(process.env.APP_HANG_MS ?? 60000));
  process.exit(0);
}

const EVENTS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'exit'];
const before = EVENTS.map((e) => process.listenerCount(e));
const timeoutMs = process.env.APP_TIMEOUT_MS ? Number(process.env.APP_TIMEOUT_MS) : undefined;
const world = await initWorld(timeoutMs ? { timeoutMs } : {});
const { rank: me, size: R } = world;
// Process-wide handlers that initWorld() left installed (a world must not keep any).
const handlers = Object.fromEntries(EVENTS.map((e, i) => [e, process.listenerCount(e) - before[i]]));
say({ rank: me, pid: process.pid, joined: true, handlers });

if (scenario === 'hello') {
  await world.barrier();
  const s = await world.allReduce(new Int32Array([me + 1]));
  say({ rank: me, size: R, sum: s[0] });
} else if (scenario === 'hold') {
  // Stay in the world until the test creates the file named by APP_GO_FILE.
  await world.barrier();
  say({ rank: me, ready: true });
  while (!existsSync(must(process.env.APP_GO_FILE, 'APP_GO_FILE'))) await sleep(50);
  await world.barrier();
  say({ rank: me, done: true });
} else if (scenario === 'noclose') {
  // A script that never calls close(): it must still end when its last line has run.
  const s = await world.allReduce(new Float32Array([me + 1]));
  say({ rank: me, sum: s[0] });
  process.exitCode = 0;
} else if (scenario === 'finish-while-peer-hangs') {
  await world.barrier();
  if (me === Number(arg)) {
    say({ rank: me, hanging: true });
    await sleep(Number(process.env.APP_HANG_MS ?? 60000));
  }
  const t0 = Date.now();
  await world.close();
  say({ rank: me, closeMs: Date.now() - t0 });
  process.exit(0);
} else if (scenario === 'mismatch') {
  // Rank 0 and rank 1 call collectives of the same byte size that differ in `arg`.
  const f = new Float32Array(8).fill(me + 1);
  try {
    if (arg === 'kind') {
      if (me === 0) await world.allReduce(f);
      else await world.broadcast(f, 0);
    } else if (arg === 'dtype') {
      if (me === 0) await world.allReduce(f);
      else await world.allReduce(new Int32Array(8).fill(1));
    } else if (arg === 'op') {
      await world.allReduce(f, me === 0 ? 'sum' : 'max');
    } else if (arg === 'root') {
      await world.broadcast(f, me === 0 ? 0 : 1);
    } else if (arg === 'length') {
      await world.allGather(me === 0 ? new Float32Array(8) : new Float32Array(4));
    }
    say({ rank: me, passed: true, value: Array.from(f) });
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    await world.close({ abort: true });
    process.exit(1);
  }
} else if (scenario === 'oversize') {
  // Rank 1 accepts at most TPRUN_MAX_MESSAGE_BYTES; rank 0 sends more.
  if (me === 0) await world.send(new Uint8Array(Number(process.env.APP_BYTES ?? 4000)), 1, 4);
  if (me === 1) await world.recv(0, 4);
} else if (scenario === 'die') {
  // Rank `arg` SIGKILLs itself after a barrier; the others time how long until their barrier fails.
  await world.barrier();
  if (me === Number(arg)) {
    await sleep(300);
    process.kill(process.pid, 'SIGKILL');
  }
  const t0 = Date.now();
  try {
    await world.barrier();
  } catch (e) {
    say({ rank: me, failedAfterMs: Date.now() - t0 - 300, error: e.message });
    process.exit(1);
  }
}
if (scenario !== 'noclose') await world.close();
