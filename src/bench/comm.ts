// `tprun bench comm`: allReduce latency and bus bandwidth of tprun's world, next to Open MPI (mpi4py,
// Debian's /usr/bin/python3; the buffer is the standard library's array, so numpy need not be there) in the same run. Bus bandwidth = 2(R-1)/R x bytes / time, the
// figure NCCL's and OSU's benchmarks report, so numbers compare across world sizes.
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import { runDistributed } from '../launcher/self-launch.js';
import { detectIdentity } from '../rank/identity.js';
import { median } from './stats.js';
import type { World } from '../rank/types.js';

interface Args {
  n: number;
  sizes: string;
  json: boolean;
  mpi: boolean;
  rounds: number;
  fresh: number;
  python: string;
}

export interface CommResult {
  op: 'allreduce';
  bytes: number;
  ranks: number;
  us: number;
  busGBps: number;
  /** Median of single operations (the mean `us` includes the stalls of a loaded machine). */
  p50us: number;
  impl: 'tprun' | 'openmpi';
  /** Rounds this is the median of (tprun and Open MPI alternate, so that both meet the same load). */
  rounds?: number;
  /** --fresh (first size only): the process's first call, and the median single call of each window of its
   *  next calls, [from, to, us] (the slowest rank's), before any warm-up. */
  firstUs?: number;
  fresh?: [number, number, number][];
}

const RESULTS_ENV = 'TPRUN_BENCH_COMM_OUT';

/** Iterations per timed run: plenty for small messages, ~200 MB moved for large ones, at least 5. */
/** Iterations per size, shared by every allreduce benchmark so that tprun and Open MPI run the same protocol. */
export const itersFor = (bytes: number) => (bytes <= 65536 ? 3000 : Math.max(5, Math.round(2e8 / bytes)));

function parseSizes(s: string): number[] {
  const sizes = s.split(',').map((x) => Number(x.trim()));
  for (const b of sizes) {
    if (!Number.isInteger(b) || b < 4 || b % 4 !== 0) throw new Error(`--sizes: ${b} is not a positive multiple of 4 bytes (float32 elements)`);
  }
  return sizes;
}

const bus = (bytes: number, ranks: number, us: number) => (ranks > 1 ? ((2 * (ranks - 1)) / ranks) * bytes / (us * 1e3) : 0);

/** Windows of call indices that --fresh reports: what a user's first calls get, call 0 apart. */
export const freshWindows = (n: number): [number, number][] =>
  ([[1, 10], [10, 100], [100, 1000], [1000, 3000], [3000, 10000], [10000, 30000]] as [number, number][])
    .filter(([a]) => a < n).map(([a, b]) => [a, Math.min(b, n)]);

/** A fresh process's first `n` calls on `buf`, each awaited in turn and timed alone. */
async function firstCalls(world: World, buf: Float32Array, n: number): Promise<{ firstUs: number; fresh: [number, number, number][] }> {
  const each = new Float64Array(n);
  await world.barrier();
  let prev = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    await world.allReduce(buf);
    const t = process.hrtime.bigint();
    each[i] = Number(t - prev) / 1e3;
    prev = t;
  }
  const wins = freshWindows(n);
  const mine = [each[0], ...wins.map(([a, b]) => median(Array.from(each.subarray(a, b))))];
  const all = await world.allReduce(new Float64Array(mine), 'max');
  return { firstUs: round(all[0]), fresh: wins.map(([a, b], i) => [a, b, round(all[i + 1])]) };
}

export async function measureWorld(world: World, sizes: number[], fresh = 0): Promise<CommResult[]> {
  const out: CommResult[] = [];
  for (const bytes of sizes) {
    const buf = new Float32Array(bytes / 4).fill(1);
    const first = fresh > 0 && out.length === 0 ? await firstCalls(world, buf, fresh) : undefined;
    const iters = itersFor(bytes);
    for (let i = 0; i < Math.max(3, Math.min(200, iters / 5)); i++) await world.allReduce(buf);
    // Best of three timed runs (the machine may be shared; the other runs mostly measure the noise),
    // and the median single operation, which a stall on a loaded machine does not move.
    let best = Infinity;
    const each = new Float64Array(iters);
    let p50 = Infinity;
    for (let rep = 0; rep < 3; rep++) {
      await world.barrier();
      const t0 = process.hrtime.bigint();
      let prev = t0;
      for (let i = 0; i < iters; i++) {
        await world.allReduce(buf);
        const t = process.hrtime.bigint();
        each[i] = Number(t - prev) / 1e3;
        prev = t;
      }
      const us = Number(prev - t0) / 1e3 / iters;
      each.sort();
      // Every rank must agree on the figures: take the slowest rank's.
      const all = await world.allReduce(new Float64Array([us, each[iters >> 1]]), 'max');
      best = Math.min(best, all[0]);
      p50 = Math.min(p50, all[1]);
    }
    out.push({ op: 'allreduce', bytes, ranks: world.size, us: round(best), busGBps: round(bus(bytes, world.size, best)), p50us: round(p50), impl: 'tprun', ...first });
  }
  return out;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/** Per figure, the median over rounds of one size's results. */
function medianResult(rs: CommResult[]): CommResult {
  const m: CommResult = { ...rs[0], us: round(median(rs.map((r) => r.us))), busGBps: round(median(rs.map((r) => r.busGBps))), p50us: round(median(rs.map((r) => r.p50us))), rounds: rs.length };
  if (rs[0].fresh) {
    m.firstUs = round(median(rs.map((r) => r.firstUs!)));
    m.fresh = rs[0].fresh.map(([a, b], i) => [a, b, round(median(rs.map((r) => r.fresh![i][2])))]);
  }
  return m;
}

/** Open MPI's side (mpi4py): warm-up, best of three timed runs, the slowest rank's time; argv[1] = [[bytes, iters], ...]. */
export const MPI_SCRIPT = `
import json, sys, time
from array import array
from mpi4py import MPI
comm = MPI.COMM_WORLD
R = comm.Get_size()
fresh = json.loads(sys.argv[2]) if len(sys.argv) > 2 else []
for k, (nbytes, iters) in enumerate(json.loads(sys.argv[1])):
    buf = array('f', [1.0]) * (nbytes // 4)
    first = {}
    if fresh and k == 0:
        n = fresh[-1][1]
        each = [0.0] * n
        comm.Barrier()
        prev = time.perf_counter()
        for i in range(n):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            t = time.perf_counter()
            each[i] = (t - prev) * 1e6
            prev = t
        def med(xs):
            s = sorted(xs)
            m = len(s) // 2
            return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2
        mine = [each[0]] + [med(each[a:b]) for a, b in fresh]
        worst = [comm.allreduce(x, op=MPI.MAX) for x in mine]
        first = {"firstUs": round(worst[0], 3), "fresh": [[a, b, round(x, 3)] for (a, b), x in zip(fresh, worst[1:])]}
    for _ in range(max(3, min(200, iters // 5))):
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    best = p50 = float('inf')
    each = [0.0] * iters
    for rep in range(3):
        comm.Barrier()
        t0 = prev = time.perf_counter()
        for i in range(iters):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            t = time.perf_counter()
            each[i] = (t - prev) * 1e6
            prev = t
        us = (prev - t0) * 1e6 / iters
        each.sort()
        best = min(best, comm.allreduce(us, op=MPI.MAX))
        p50 = min(p50, comm.allreduce(each[iters // 2], op=MPI.MAX))
    if comm.Get_rank() == 0:
        bus = 2 * (R - 1) / R * nbytes / (best * 1e3) if R > 1 else 0
        print(json.dumps({"op": "allreduce", "bytes": nbytes, "ranks": R, "us": round(best, 3), "busGBps": round(bus, 3), "p50us": round(p50, 3), "impl": "openmpi", **first}), flush=True)
`;

async function measureOpenMpi(n: number, sizes: number[], fresh: number, python: string): Promise<CommResult[] | string> {
  const dir = mkdtempSync(join(tmpdir(), 'tprun-bench-comm-'));
  try {
    const script = join(dir, 'allreduce.py');
    writeFileSync(script, MPI_SCRIPT);
    const r = await execa('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(n), python, script,
      JSON.stringify(sizes.map((b) => [b, itersFor(b)])), JSON.stringify(freshWindows(fresh))], { reject: false, timeout: 600_000 });
    if (r.exitCode !== 0) return `mpirun failed (${r.exitCode ?? r.signal}): ${(r.stderr || r.stdout || String(r.message)).split('\n').slice(-3).join(' ')}`;
    return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as CommResult);
  } catch (e) {
    return `mpirun not runnable: ${(e as Error).message.split('\n')[0]} (apt-get install openmpi-bin python3-mpi4py)`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const command: CommandModule<object, Args> = {
  command: 'comm',
  describe: 'allReduce latency and bus bandwidth, tprun vs Open MPI (mpi4py)',
  builder: (y) => y
    .option('n', { alias: 'np', type: 'number', default: 2, describe: 'ranks' })
    .option('sizes', { type: 'string', default: '1024,1048576,16777216', describe: 'message sizes in bytes (float32), comma separated' })
    .option('mpi', { type: 'boolean', default: true, describe: 'also run Open MPI (--no-mpi to skip)' })
    .option('rounds', { type: 'number', default: 3, describe: 'tprun and Open MPI runs, alternating; figures are medians over them' })
    .option('json', { type: 'boolean', default: false, describe: 'JSON lines only (no launcher progress)' })
    .option('fresh', { type: 'number', default: 0, describe: "also time the first N calls of the first size, before any warm-up: what a fresh process's first calls get (medians per window of calls)" })
    .option('python', { type: 'string', default: '/usr/bin/python3', describe: 'the Python whose mpi4py mpirun runs (as bench launch)' }) as never,
  handler: async (a) => {
    let sizes: number[];
    try {
      sizes = parseSizes(a.sizes);
      if (!Number.isInteger(a.n) || a.n < 1) throw new Error(`-n: ${a.n} is not a positive integer`);
      if (!Number.isInteger(a.rounds) || a.rounds < 1) throw new Error(`--rounds: ${a.rounds} is not a positive integer`);
      if (!Number.isInteger(a.fresh) || a.fresh < 0) throw new Error(`--fresh: ${a.fresh} is not a whole number of calls`);
    } catch (e) {
      process.stderr.write(`tprun bench comm: ${(e as Error).message}\n`);
      process.exit(2);
    }
    // Runs on every rank (started by runDistributed below, or by the user under tprun/mpirun/srun).
    const body = async (world: World) => {
      const res = await measureWorld(world, sizes, a.fresh);
      if (world.rank !== 0) return;
      const file = process.env[RESULTS_ENV];
      if (file) writeFileSync(file, JSON.stringify(res));
      else for (const r of res) console.log(JSON.stringify(r));
    };
    const id = detectIdentity();
    if (id.inWorld) return runDistributed(id.size, body);
    const dir = mkdtempSync(join(tmpdir(), 'tprun-bench-comm-'));
    try {
      const file = join(dir, 'tprun.json');
      process.env[RESULTS_ENV] = file;
      // Rounds alternate tprun and Open MPI, so that a machine whose load changes (shared) weighs on both.
      const mine: CommResult[][] = [];
      const ref: CommResult[][] = [];
      let mpiError: string | undefined;
      const load = [loadavg()[0]];
      for (let k = 0; k < a.rounds; k++) {
        await runDistributed(a.n, body, { quiet: a.json });
        mine.push(JSON.parse(readFileSync(file, 'utf8')) as CommResult[]);
        if (a.mpi && !mpiError) {
          const r = await measureOpenMpi(a.n, sizes, a.fresh, a.python);
          if (typeof r === 'string') mpiError = r;
          else ref.push(r);
        }
        load.push(loadavg()[0]);
      }
      const med = mine[0].map((m, i) => medianResult(mine.map((run) => run[i])));
      for (const r of med) console.log(JSON.stringify(r));
      if (!a.mpi) return;
      if (mpiError) {
        console.log(JSON.stringify({ impl: 'openmpi', error: mpiError }));
        return;
      }
      const refMed = ref[0].map((m, i) => medianResult(ref.map((run) => run[i])));
      for (const r of refMed) console.log(JSON.stringify(r));
      for (const m of med) {
        const o = refMed.find((r) => r.bytes === m.bytes);
        if (!o) continue;
        console.log(JSON.stringify({
          ratio: 'tprun/openmpi', op: 'allreduce', bytes: m.bytes, ranks: m.ranks, us: round(m.us / o.us), busGBps: round(o.busGBps ? m.busGBps / o.busGBps : 0), p50us: round(m.p50us / o.p50us),
          ...(m.fresh && o.fresh ? { firstUs: round(m.firstUs! / o.firstUs!), fresh: m.fresh.map(([x, y, us], i) => [x, y, round(us / o.fresh![i][2])]) } : {}),
          rounds: a.rounds, loadavg1: load.map((l) => round(l)),
        }));
      }
    } finally {
      delete process.env[RESULTS_ENV];
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
export default command;
