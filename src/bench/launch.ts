// `tprun bench launch`: wall time from starting the launcher to its exit, for N ranks that join the
// world (initWorld), meet at a barrier and exit; next to Open MPI's mpirun running the same with mpi4py
// (`MPI.COMM_WORLD.Barrier()`), interleaved in the same run, median of several repetitions. Two floors run
// beside them: `tprun -n N -- node -e 0` (the launcher with ranks that only start Node: what the world's
// join and barrier add is the difference) and `mpirun -np N node -e 0` (Node's own start under mpirun's
// launcher: no Node-based launch can go below it, whatever its world does).
import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';
import { median } from './stats.js';

interface Args {
  n: number;
  reps: number;
  json: boolean;
  python: string;
}

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
const RANK = fileURLToPath(new URL('./launch-rank.js', import.meta.url));

/**
 * CPU time (user + system, ms) of this process's reaped children and their reaped descendants, from
 * /proc/self/stat (cutime, cstime); undefined off Linux. A launch on few cores is CPU-bound, so its CPU
 * is the figure that other jobs on the machine disturb least.
 */
function childrenCpuMs(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}
const CLK_TCK = 100; // sysconf(_SC_CLK_TCK): 100 on every Linux the kernel's USER_HZ serves

async function timeOnce(file: string, args: string[]): Promise<{ ms: number; cpuMs?: number }> {
  const c0 = childrenCpuMs();
  const t0 = performance.now();
  const r = await execa(file, args, { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', env: { TPRUN_TRACE: undefined } });
  const ms = performance.now() - t0;
  const c1 = childrenCpuMs();
  if (r.failed) throw new Error(`${file} ${args.join(' ')} failed (${r.exitCode ?? r.signal}): ${String(r.stderr).split('\n')[0]}`);
  return { ms, cpuMs: c0 === undefined || c1 === undefined ? undefined : c1 - c0 };
}

const command: CommandModule<object, Args> = {
  command: 'launch',
  describe: 'start N ranks that initWorld(), barrier and exit, against mpirun + mpi4py',
  builder: (y) =>
    y
      .option('n', { type: 'number', default: 4, describe: 'ranks' })
      .option('reps', { type: 'number', default: 7, describe: 'timed repetitions of each (after one warm-up)' })
      .option('json', { type: 'boolean', default: false, describe: 'JSON lines only (no summary on stderr)' })
      // Debian's mpi4py is built for its own python3; a host whose python3 is another version brings one.
      .option('python', { type: 'string', default: '/usr/bin/python3', describe: 'the Python whose mpi4py mpirun runs' }) as never,
  handler: async (a) => {
    if (!Number.isInteger(a.n) || a.n < 1) throw Object.assign(new Error(`-n must be a positive integer (got ${a.n})`), { exitCode: 2 });
    if (!Number.isInteger(a.reps) || a.reps < 1) throw Object.assign(new Error(`--reps must be a positive integer (got ${a.reps})`), { exitCode: 2 });
    // --gpus none: mpirun binds no GPU either, and probing nvidia-smi is not what is being measured.
    const tprun = () => timeOnce(process.execPath, [CLI, '-n', String(a.n), '--gpus', 'none', '--quiet', '--', process.execPath, RANK]);
    const mpi = () =>
      timeOnce('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(a.n), a.python, '-c', 'from mpi4py import MPI; MPI.COMM_WORLD.Barrier()']);
    const bare = ['-e', '0'];
    const tprunBare = () => timeOnce(process.execPath, [CLI, '-n', String(a.n), '--gpus', 'none', '--quiet', '--', process.execPath, ...bare]);
    const mpiBare = () => timeOnce('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(a.n), process.execPath, ...bare]);
    // One warm-up of each (page cache, the first process's JIT caches) before the timed rounds.
    let mpiError: string | undefined;
    await tprun();
    await tprunBare();
    try {
      await mpi();
      await mpiBare();
    } catch (e) {
      mpiError = (e as Error).message;
    }
    type Run = { ms: number; cpuMs?: number };
    const times = { tprun: [] as Run[], mpirun: [] as Run[], tprunBare: [] as Run[], mpiBare: [] as Run[] };
    for (let i = 0; i < a.reps; i++) {
      times.tprun.push(await tprun());
      if (!mpiError) times.mpirun.push(await mpi());
      times.tprunBare.push(await tprunBare());
      if (!mpiError) times.mpiBare.push(await mpiBare());
    }
    const line = (tool: string, runs: { ms: number; cpuMs?: number }[]) => {
      const ms = runs.map((r) => r.ms);
      const cpu = runs.every((r) => r.cpuMs !== undefined) ? median(runs.map((r) => r.cpuMs!)) : undefined;
      return {
        bench: 'launch', tool, ranks: a.n, reps: ms.length,
        median_ms: Math.round(median(ms) * 10) / 10, min_ms: Math.round(Math.min(...ms) * 10) / 10, max_ms: Math.round(Math.max(...ms) * 10) / 10,
        ...(cpu !== undefined ? { median_cpu_ms: Math.round(cpu) } : {}),
      };
    };
    const t = line('tprun', times.tprun);
    console.log(JSON.stringify(t));
    const tprunFloor = line('tprun, ranks only start node (node -e 0)', times.tprunBare);
    if (mpiError) {
      console.log(JSON.stringify({ ...tprunFloor, floor: true }));
      console.log(JSON.stringify({ bench: 'launch', tool: 'mpirun', ranks: a.n, error: mpiError }));
      return;
    }
    const m = line('mpirun', times.mpirun);
    console.log(JSON.stringify(m));
    const floors = [tprunFloor, line('mpirun, ranks only start node (node -e 0)', times.mpiBare)];
    for (const f of floors) console.log(JSON.stringify({ ...f, floor: true, ratio_to_mpirun_mpi4py: Math.round((f.median_ms / m.median_ms) * 1000) / 1000 }));
    const ratio = Math.round((t.median_ms / m.median_ms) * 1000) / 1000;
    const cpuRatio = t.median_cpu_ms !== undefined && m.median_cpu_ms ? Math.round((t.median_cpu_ms / m.median_cpu_ms) * 1000) / 1000 : undefined;
    console.log(JSON.stringify({ bench: 'launch', ranks: a.n, ratio_tprun_to_mpirun: ratio, ...(cpuRatio !== undefined ? { cpu_ratio_tprun_to_mpirun: cpuRatio } : {}) }));
    if (!a.json) {
      process.stderr.write(`launch of ${a.n} ranks: tprun ${t.median_ms} ms, mpirun ${m.median_ms} ms (ratio ${ratio}; goal <= 0.75)` +
        `${cpuRatio !== undefined ? `; CPU ${t.median_cpu_ms} vs ${m.median_cpu_ms} ms (${cpuRatio}x)` : ''}` +
        `; floors: tprun -- node -e 0 ${floors[0].median_ms} ms, mpirun node -e 0 ${floors[1].median_ms} ms\n`);
    }
  },
};
export default command;
