// `tprun bench build`: `build --model` (HF directory → engine, one step) and `convert` of a generated
// LLaMA-shaped checkpoint, each next to `cp -r` of the same files, interleaved in the same run from the
// same warm page cache (median of --reps). The build's phases (load / build / save) come from its own
// --trace, so a slow build says where its time went. More anchors say what is reachable at all:
// a plain read/write loop in a node process (two copies of every byte where cp's copy_file_range makes
// one), the same files mapped and written from the mapping (one copy, from user space: the floor of a
// build that maps its sources) and the conversion ranks' own seconds (without process start-up and
// world rendezvous, which are the launcher's cost, not the data path's).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { execa } from 'execa';
import type { CommandModule } from 'yargs';
import { convertThreads, dirBytes, median, readRankStats } from './stats.js';
import { sourceModel, warmPageCache } from './source-model.js';
import { STATS_ENV } from '../checkpoint/stats-env.js';

interface Args {
  preset: string;
  layers?: number;
  model?: string;
  tp: number;
  'convert-tp': number;
  dtype: 'float32' | 'float16';
  reps: number;
  workdir?: string;
}

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));

/** `node -e COPY_LOOP SRC DST`: every file of SRC into DST through one reused 8 MiB buffer, pread/pwrite. */
const COPY_LOOP = `
const fs = require('node:fs'), path = require('node:path');
const [src, dst] = process.argv.slice(1);
fs.mkdirSync(dst);
const buf = new Uint8Array(8 << 20);
for (const f of fs.readdirSync(src)) {
  const a = fs.openSync(path.join(src, f), 'r'), b = fs.openSync(path.join(dst, f), 'w');
  for (let pos = 0, n; (n = fs.readSync(a, buf, 0, buf.length, pos)) > 0; pos += n) fs.writeSync(b, buf, 0, n, pos);
  fs.closeSync(a);
  fs.closeSync(b);
}`;

/**
 * `node -e MAP_LOOP KOFFI SRC DST`: every file of SRC mapped (mmap through koffi, the optional FFI tprun
 * maps checkpoints with) and written to DST from the mapping in 512 KiB pwrites: one copy of each byte
 * in the kernel, as cp's copy_file_range makes, but from user space. The floor of a build that maps its
 * sources (engine/half-simd.ts) and writes what it converts; absent without koffi.
 */
const MAP_LOOP = `
const fs = require('node:fs'), path = require('node:path');
const [koffiPath, src, dst] = process.argv.slice(1);
const koffi = require(koffiPath), libc = koffi.load('libc.so.6');
const mmap = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmap = libc.func('int munmap(void *addr, size_t len)');
fs.mkdirSync(dst);
for (const f of fs.readdirSync(src)) {
  const a = fs.openSync(path.join(src, f), 'r'), b = fs.openSync(path.join(dst, f), 'w');
  const size = fs.fstatSync(a).size;
  if (size > 0) {
    const p = mmap(null, size, 1, 2, a, 0);
    const u = new Uint8Array(koffi.view(p, size));
    for (let pos = 0; pos < size;) pos += fs.writeSync(b, u, pos, Math.min(512 << 10, size - pos), pos);
    munmap(p, size);
  }
  fs.closeSync(a);
  fs.closeSync(b);
}`;

/** koffi's entry point as this module would load it, or undefined where it is not installed. */
function koffiPath(): string | undefined {
  try {
    return createRequire(import.meta.url).resolve('koffi');
  } catch {
    return undefined;
  }
}

interface Timing { seconds: number; cpuSeconds: number }

/** Wall and CPU (user + system of the command and its children) seconds of one run. */
async function timed(file: string, args: string[], env: Record<string, string | undefined> = {}): Promise<Timing> {
  await execa('sync');
  const cpu0 = childrenCpu();
  const t0 = performance.now();
  const r = await execa(file, args, { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', env: { TPRUN_TRACE: undefined, ...env } });
  const seconds = (performance.now() - t0) / 1000;
  if (r.failed) throw new Error(`${path.basename(file)} ${args.join(' ')} failed (${r.exitCode ?? r.signal}): ${String(r.stderr).trim().split('\n').pop()}`);
  return { seconds, cpuSeconds: childrenCpu() - cpu0 };
}

/**
 * CPU seconds of this process's waited-for children so far (cutime + cstime of /proc/self/stat, in
 * USER_HZ = 100 ticks on every Linux ABI): on a shared machine the CPU a tool burns says more than
 * its wall time. NaN without /proc.
 */
function childrenCpu(): number {
  try {
    const f = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
    return (Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * Durations (seconds) of the top-level spans of a Chrome trace, by name, and the weight writer's
 * arguments (which writer ran, on how many threads: weight-file.ts records them on its span).
 */
function phases(traceFile: string): { seconds: Record<string, number>; writer?: { writer?: string; threads?: number; worker_code?: string } } {
  const seconds: Record<string, number> = {};
  let writer: { writer?: string; threads?: number; worker_code?: string } | undefined;
  try {
    const t = JSON.parse(fs.readFileSync(traceFile, 'utf8')) as { traceEvents: { ph: string; name: string; dur?: number; args?: Record<string, unknown> }[] };
    for (const e of t.traceEvents) {
      if (e.ph !== 'X' || e.dur === undefined) continue;
      seconds[e.name] = (seconds[e.name] ?? 0) + e.dur / 1e6;
      // And what its workers ran (their bundle or the ES modules: a stale bundle is silently not used).
      if (e.name === 'weights.write' && e.args) writer = { writer: e.args.writer as string, threads: e.args.threads as number, worker_code: e.args.worker_code as string | undefined };
    }
  } catch {
    // no trace: the phases are simply not reported
  }
  return { seconds, writer };
}

const command: CommandModule<object, Args> = {
  command: 'build',
  describe: 'build --model and convert of a generated checkpoint against cp -r of the same files',
  builder: (y) => y
    .option('preset', { type: 'string', default: 'tinyllama-1.1b', describe: 'model to generate (see tprun gen-checkpoint)' })
    .option('json', { type: 'boolean', default: true, describe: 'JSON lines on stdout (this benchmark prints nothing else there)' })
    .option('layers', { type: 'number', describe: 'override the preset\'s layer count' })
    .option('model', { type: 'string', describe: 'use this existing Hugging Face directory instead of generating one' })
    .option('tp', { type: 'number', default: 1, describe: 'ranks of the engine build' })
    .option('convert-tp', { type: 'number', default: 2, describe: 'ranks of the conversion' })
    .option('dtype', { choices: ['float32', 'float16'] as const, default: 'float16' as const, describe: 'engine dtype' })
    .option('reps', { type: 'number', default: 3, describe: 'timed repetitions of each, interleaved' })
    .option('workdir', { type: 'string', describe: 'where to put the files (default: a temp dir, removed at the end)' }) as never,
  handler: async (a) => {
    const work = fs.mkdtempSync(path.join(a.workdir ?? os.tmpdir(), 'tprun-bench-build-'));
    try {
      const model = await sourceModel('build', a, work);
      const modelBytes = dirBytes(model);
      await warmPageCache(model);
      const koffi = koffiPath();
      const cp: Timing[] = [], loop: Timing[] = [], mapLoop: Timing[] = [], build: Timing[] = [], conv: Timing[] = [], streaming: Timing[] = [];
      const rankSeconds: number[] = [];
      const buildPhases: Record<string, number>[] = [];
      let writer: { writer?: string; threads?: number; worker_code?: string } | undefined;
      let convThreads = 1;
      let engineBytes = 0, checkpointBytes = 0;
      for (let i = 0; i < a.reps; i++) {
        const cpOut = path.join(work, `cp${i}`);
        cp.push(await timed('cp', ['-r', model, cpOut]));
        fs.rmSync(cpOut, { recursive: true, force: true });
        loop.push(await timed(process.execPath, ['-e', COPY_LOOP, model, cpOut]));
        fs.rmSync(cpOut, { recursive: true, force: true });
        if (koffi) {
          mapLoop.push(await timed(process.execPath, ['-e', MAP_LOOP, koffi, model, cpOut]));
          fs.rmSync(cpOut, { recursive: true, force: true });
        }
        const engine = path.join(work, `engine${i}`);
        const trace = path.join(work, `trace${i}.json`);
        build.push(await timed(process.execPath, [CLI, 'build', '--model', model, '--tp', String(a.tp), '--dtype', a.dtype, '--out', engine, '--quiet', '--trace', trace]));
        const ph = phases(trace);
        buildPhases.push(ph.seconds);
        writer = ph.writer ?? writer;
        engineBytes = dirBytes(engine);
        fs.rmSync(engine, { recursive: true, force: true });
        // Where the parallel weight writer ran, the streaming one beside it (weight-file.ts), same run.
        if (writer?.writer === 'parallel') {
          streaming.push(await timed(process.execPath, [CLI, 'build', '--model', model, '--tp', String(a.tp), '--dtype', a.dtype, '--out', engine, '--quiet'], { TPRUN_BUILD_WRITER: 'streaming' }));
          fs.rmSync(engine, { recursive: true, force: true });
        }
        const ckpt = path.join(work, `ckpt${i}`);
        const stats = path.join(work, `stats${i}`);
        fs.mkdirSync(stats);
        conv.push(await timed(process.execPath, [CLI, 'convert', '--model', model, '--tp', String(a['convert-tp']), '--out', ckpt], { [STATS_ENV]: stats }));
        const st = readRankStats(stats);
        convThreads = convertThreads(st);
        rankSeconds.push(Math.max(...st.map((s) => s.seconds)));
        checkpointBytes = dirBytes(ckpt);
        fs.rmSync(ckpt, { recursive: true, force: true });
      }
      const med = (xs: Timing[], k: keyof Timing = 'seconds') => median(xs.map((x) => x[k]));
      const names = [...new Set(buildPhases.flatMap((p) => Object.keys(p)))];
      const result = {
        bench: 'build', preset: a.model ? undefined : a.preset, model_bytes: modelBytes, reps: a.reps,
        // os.availableParallelism() of this process: the cores the commands below could use.
        cores: os.availableParallelism(),
        cp_seconds: med(cp),
        cp_cpu_seconds: med(cp, 'cpuSeconds'),
        copy_loop: { seconds: med(loop), ratio: med(loop) / med(cp), cpu_seconds: med(loop, 'cpuSeconds') },
        ...(mapLoop.length ? { map_loop: { seconds: med(mapLoop), ratio: med(mapLoop) / med(cp), cpu_seconds: med(mapLoop, 'cpuSeconds') } } : {}),
        build: { tp: a.tp, dtype: a.dtype, writer: writer?.writer, threads: writer?.threads, worker_code: writer?.worker_code, seconds: med(build), ratio: med(build) / med(cp), ratio_to_copy_loop: med(build) / med(loop),
          cpu_seconds: med(build, 'cpuSeconds'), engine_bytes: engineBytes,
          phases_seconds: Object.fromEntries(names.map((n) => [n, median(buildPhases.map((p) => p[n] ?? 0))])) },
        ...(streaming.length ? { build_streaming_writer: { seconds: med(streaming), ratio: med(streaming) / med(cp), cpu_seconds: med(streaming, 'cpuSeconds') } } : {}),
        convert: { tp: a['convert-tp'], threads: convThreads, seconds: med(conv), ratio: med(conv) / med(cp), ratio_to_copy_loop: med(conv) / med(loop),
          cpu_seconds: med(conv, 'cpuSeconds'), checkpoint_bytes: checkpointBytes,
          // The ranks' conversion alone (slowest rank, from its first joined moment to its rename).
          rank_seconds: median(rankSeconds), rank_ratio: median(rankSeconds) / med(cp) },
        all: { cp, copy_loop: loop, map_loop: mapLoop, build, build_streaming_writer: streaming, convert: conv, convert_rank_seconds: rankSeconds },
      };
      process.stdout.write(JSON.stringify(result) + '\n');
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  },
};
export default command;
