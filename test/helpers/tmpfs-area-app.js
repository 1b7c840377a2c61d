// A rank of one of several jobs sharing a small /dev/shm (tmpfs-jobs.js): one short allReduce, then
// `ready-JOB` (with its area's step), then it waits for `go` and makes a call as long as its step, the
// call that uses the whole area. Prints `job J rank R step S long ok`.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initWorld } from '../../dist/rank/world.js';

const dir = process.env.TMPFS_JOBS_DIR ?? '.';
const job = process.env.TMPFS_JOB;
const world = await initWorld({ timeoutMs: 60000 });
/** @type {{ step: number }} the world's own, not in its public type */
const shar = /** @type {any} */ (world).shar;
await world.allReduce(new Float32Array(16));
if (world.rank === 0) writeFileSync(join(dir, `ready-${job}`), `${shar.step}`);
while (!existsSync(join(dir, 'go'))) await new Promise((r) => setTimeout(r, 50));
const b = new Float32Array(shar.step).fill(world.rank + 1);
await world.allReduce(b);
if (b[0] !== 3 || b[b.length - 1] !== 3) throw new Error(`job ${job} rank ${world.rank}: wrong sum ${b[0]}`);
console.log(`job ${job} rank ${world.rank} step ${shar.step} long ok`);
await world.close();
