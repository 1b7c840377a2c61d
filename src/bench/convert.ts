// `tprun bench convert`: conversion of a generated LLaMA-shaped checkpoint (>= 1 GB) at --tp N, next to
// `cp -r` of the same files (and a plain read/write loop, the floor for copying in user space),
// interleaved in the same run from the same warm page cache; each timed both alone and including the
// `sync` that puts its output on disk. Peak RSS, bytes read and seconds per rank come from the ranks.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { CommandModule } from 'yargs';
import { STATS_ENV } from '../checkpoint/stats-env.js';
import { convertThreads, dirBytes, median, readRankStats } from './stats.js';
import { sourceModel, warmPageCache } from './source-model.js';

interface Args { preset: string; layers?: number; model?: string; tp: number; reps: number; workdir?: string }

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));

async function timed(file: string, args: string[], env: Record<string, string> = {}): Promise<{ run: number; withSync: number }> {
  await execa('sync');
  const t0 = performance.now();
  const r = await execa(file, args, { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', env });
  const t1 = performance.now();
  if (r.failed) throw new Error(`${path.basename(file)} ${args.join(' ')} failed (${r.exitCode ?? r.signal}): ${String(r.stderr).trim().split('\n').pop()}`);
  await execa('sync');
  return { run: (t1 - t0) / 1000, withSync: (performance.now() - t0) / 1000 };
}

/** A plain read/write loop over the same files: the floor for any converter that copies in user space. */
async function userspaceCopy(src: string, dst: string): Promise<{ run: number; withSync: number }> {
  await execa('sync');
  const t0 = performance.now();
  fs.mkdirSync(dst);
  const buf = new Uint8Array(16 << 20);
  for (const f of fs.readdirSync(src)) {
    const a = fs.openSync(path.join(src, f), 'r');
    const b = fs.openSync(path.join(dst, f), 'w');
    for (let pos = 0, n; (n = fs.readSync(a, buf, 0, buf.length, pos)) > 0; pos += n) fs.writeSync(b, buf, 0, n, pos);
    fs.closeSync(a);
    fs.closeSync(b);
  }
  const t1 = performance.now();
  await execa('sync');
  return { run: (t1 - t0) / 1000, withSync: (performance.now() - t0) / 1000 };
}

const command: CommandModule<object, Args> = {
  command: 'convert',
  describe: 'tprun convert of a generated >= 1 GB checkpoint against cp -r of the same files; peak RSS per rank',
  builder: (y) => y
    .option('preset', { type: 'string', default: 'tinyllama-1.1b', describe: 'model to generate (see tprun gen-checkpoint)' })
    .option('json', { type: 'boolean', default: true, describe: 'JSON lines on stdout (this benchmark prints nothing else there)' })
    .option('layers', { type: 'number', describe: 'override the preset\'s layer count' })
    .option('model', { type: 'string', describe: 'convert this existing checkpoint instead of generating one' })
    .option('tp', { type: 'number', default: 2 })
    .option('reps', { type: 'number', default: 3, describe: 'timed repetitions of each, interleaved' })
    .option('workdir', { type: 'string', describe: 'where to put the files (default: a temp dir, removed at the end)' }) as never,
  handler: async (a) => {
    const { LlamaForCausalLM } = await import('../model/llama.js');
    const { planRank } = await import('../checkpoint/shard.js');
    const { byteSize } = await import('../core/dtype.js');
    const work = fs.mkdtempSync(path.join(a.workdir ?? os.tmpdir(), 'tprun-bench-convert-'));
    try {
      const model = await sourceModel('convert', a, work);
      const modelBytes = dirBytes(model);
      // What "near the largest tensor" means for this model and tp.
      const { config, source } = LlamaForCausalLM.openHuggingFace(model, { mapping: { tp_size: a.tp } });
      const largestSource = Math.max(...source.names().map((n) => byteSize(source.info(n).dtype, source.info(n).shape)));
      const largestShard = Math.max(...planRank(source, config, 0).map((e) => byteSize(e.dtype, e.shape)));
      source.close();
      await warmPageCache(model);
      const cp: Array<{ run: number; withSync: number }> = [];
      const ucopy: Array<{ run: number; withSync: number }> = [];
      const conv: Array<{ run: number; withSync: number }> = [];
      // Where the rank files are written on worker threads, the main-thread path beside them (same run).
      const mainThread: Array<{ run: number; withSync: number }> = [];
      const rss: number[][] = [];
      let bytesRead: number[] = [];
      let bytesCopied: number[] = [];
      let rankSeconds: number[] = [];
      let threads = 1;
      for (let i = 0; i < a.reps; i++) {
        const cpOut = path.join(work, `cp${i}`);
        cp.push(await timed('cp', ['-r', model, cpOut]));
        fs.rmSync(cpOut, { recursive: true, force: true });
        ucopy.push(await userspaceCopy(model, cpOut));
        fs.rmSync(cpOut, { recursive: true, force: true });
        const out = path.join(work, `out${i}`);
        const stats = path.join(work, `stats${i}`);
        fs.mkdirSync(stats);
        conv.push(await timed(process.execPath, [CLI, 'convert', '--model', model, '--tp', String(a.tp), '--out', out], { [STATS_ENV]: stats }));
        const st = readRankStats(stats);
        rss.push(st.map((s) => s.maxRssBytes));
        bytesRead = st.map((s) => s.bytesRead);
        bytesCopied = st.map((s) => s.bytesCopied ?? 0);
        rankSeconds = st.map((s) => s.seconds);
        threads = convertThreads(st);
        fs.rmSync(out, { recursive: true, force: true });
        if (threads > 1) {
          mainThread.push(await timed(process.execPath, [CLI, 'convert', '--model', model, '--tp', String(a.tp), '--out', out], { TPRUN_BUILD_THREADS: '0' }));
          fs.rmSync(out, { recursive: true, force: true });
        }
      }
      const med = (xs: Array<{ run: number; withSync: number }>, k: 'run' | 'withSync') => median(xs.map((x) => x[k]));
      const peak = [...Array(a.tp).keys()].map((r) => Math.max(...rss.map((x) => x[r])));
      const result = {
        bench: 'convert', preset: a.model ? undefined : a.preset, model_bytes: modelBytes, tp: a.tp, reps: a.reps,
        cores: os.availableParallelism(), threads,
        cp_seconds: med(cp, 'run'), convert_seconds: med(conv, 'run'), ratio: med(conv, 'run') / med(cp, 'run'),
        ...(mainThread.length ? { main_thread: { convert_seconds: med(mainThread, 'run'), ratio: med(mainThread, 'run') / med(cp, 'run') } } : {}),
        cp_seconds_with_sync: med(cp, 'withSync'), convert_seconds_with_sync: med(conv, 'withSync'),
        ratio_with_sync: med(conv, 'withSync') / med(cp, 'withSync'),
        userspace_copy_seconds: med(ucopy, 'run'), userspace_copy_ratio: med(ucopy, 'run') / med(cp, 'run'),
        peak_rss_bytes_per_rank: peak, largest_source_tensor_bytes: largestSource, largest_shard_tensor_bytes: largestShard,
        peak_rss_over_largest_tensor: peak.map((p) => p / largestSource),
        bytes_read_per_rank: bytesRead,
        // Of those, copied file to file inside the kernel (kernel-copy.ts) rather than read and written.
        bytes_copied_in_kernel_per_rank: bytesCopied, rank_seconds_last_rep: rankSeconds,
        // The conversion work itself (inside the ranks, after process start-up and world rendezvous).
        rank_work_ratio_last_rep: Math.max(...rankSeconds) / cp[cp.length - 1].run,
        all: { cp, convert: conv, convert_main_thread: mainThread, userspace_copy: ucopy },
      };
      process.stdout.write(JSON.stringify(result) + '\n');
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  },
};
export default command;
