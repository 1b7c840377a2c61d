// `tprun bench multinode`: allReduce between two hosts, tprun's world (launched over ssh with --hosts)
// next to Open MPI over TCP (mpirun's ssh launcher, mpi4py) in the same run. The two hosts are network
// namespaces on this machine joined by a bridge, each with its own sshd (./netns-hosts.ts): the traffic
// crosses a real TCP/IP stack and veth pair, with no same-machine shortcut. Needs root.
// Output: JSON lines {op, bytes, ranks, hosts, us, busGBps, impl}, then tprun/openmpi ratios.
// --generate: instead, brown-llama-a decoding across the two hosts at tp 2 (two all-reduces per layer over
// the network) against pp 2 (one hand-off per token), `bench generate` lines for each and a ratio line.
import { execa } from 'execa';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';
import { makeHosts, whyNoHosts, type TestHosts } from './netns-hosts.js';
import { itersFor, MPI_SCRIPT } from './comm.js'; // the same protocol as `tprun bench comm`

interface Args {
  generate: boolean;
  'per-host': number;
  sizes: string;
  mpi: boolean;
  secure: boolean;
}

interface Row {
  op: 'allreduce';
  bytes: number;
  ranks: number;
  hosts: number;
  us: number;
  busGBps: number;
  impl: string;
}

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));

const round = (x: number) => Math.round(x * 1000) / 1000;
const jsonLines = (s: string) => s.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

async function runTprun(H: TestHosts, perHost: number, sizes: string, secure: boolean): Promise<Row[] | string> {
  const [a, b] = H.hosts;
  // The ranks run `tprun bench comm` inside the world the launcher made; rank 0 prints the JSON lines.
  const r = await execa(process.execPath, [CLI, '--hosts', `${a.addr}:${perHost},${b.addr}:${perHost}`, '--quiet', ...(secure ? ['--secure'] : []),
    '--', process.execPath, CLI, 'bench', 'comm', '--sizes', sizes, '--json', '--no-mpi'], { env: H.env, reject: false, timeout: 600_000 });
  if (r.exitCode !== 0) return `tprun failed (${r.exitCode ?? r.signal}): ${String(r.stderr || r.stdout).split('\n').slice(-3).join(' ')}`;
  return jsonLines(String(r.stdout)).map((x) => ({ ...(x as unknown as Row), hosts: 2, impl: secure ? 'tprun-secure' : 'tprun' }));
}

async function runOpenMpi(H: TestHosts, perHost: number, sizes: number[]): Promise<Row[] | string> {
  const [a, b] = H.hosts;
  const net = `${H.subnet}.0/24`;
  try {
    // The hosts share this machine's cores: with more ranks than cores, Open MPI's busy polling starves
    // the ranks it waits for, so let it yield as Open MPI itself does when it knows it is oversubscribed.
    const yieldIdle = 2 * perHost > availableParallelism() ? ['--mca', 'mpi_yield_when_idle', '1'] : [];
    // No file on the hosts: the script travels as an argument, as the ranks' program does for tprun.
    const r = await execa('ip', ['netns', 'exec', H.head, 'mpirun', '--allow-run-as-root', '--host', `${a.addr}:${perHost},${b.addr}:${perHost}`,
      '-np', String(2 * perHost), ...yieldIdle, '--mca', 'plm_rsh_args', H.sshArgs.join(' '), '--mca', 'btl', 'self,vader,tcp',
      '--mca', 'btl_tcp_if_include', net, '--mca', 'oob_tcp_if_include', net,
      '/usr/bin/python3', '-c', MPI_SCRIPT, JSON.stringify(sizes.map((s) => [s, itersFor(s)]))], { reject: false, timeout: 600_000 });
    if (r.exitCode !== 0) return `mpirun failed (${r.exitCode ?? r.signal}): ${String(r.stderr || r.stdout).split('\n').slice(-3).join(' ')}`;
    return jsonLines(String(r.stdout)).map((x) => ({ ...(x as unknown as Row), hosts: 2, impl: 'openmpi' }));
  } catch (e) {
    return `mpirun not runnable: ${(e as Error).message.split('\n')[0]} (apt-get install openmpi-bin python3-mpi4py)`;
  }
}

/** brown-llama-a at tp 2 and at pp 2, one rank per host, `bench generate --one` inside each world. */
async function runGenerate(H: TestHosts): Promise<void> {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const [a, b] = H.hosts;
  const tmp = mkdtempSync(join(tmpdir(), 'tprun-mn-gen-'));
  const rows: Record<string, unknown>[] = [];
  try {
    for (const [tp, pp] of [[2, 1], [1, 2]]) {
      const engine = join(tmp, `tp${tp}-pp${pp}`);
      await execa(process.execPath, [CLI, 'build', '--model', fileURLToPath(new URL('../../models/brown-llama-a', import.meta.url)), '--tp', String(tp), '--pp', String(pp),
        '--max-seq-len', '512', '--out', engine, '--quiet']);
      const r = await execa(process.execPath, [CLI, '--hosts', `${a.addr}:1,${b.addr}:1`, '--quiet', '--', process.execPath, CLI, 'bench', 'generate', '--one',
        '--engine', engine, '--prompt-len', '64', '--new-tokens', '64', '--reps', '3', '--prompts', '4', '--json'], { env: H.env, reject: false, timeout: 600_000 });
      const got = jsonLines(String(r.stdout)).pop();
      if (r.exitCode !== 0 || !got) {
        console.log(JSON.stringify({ impl: `tprun tp${tp}×pp${pp}`, error: `failed (${r.exitCode ?? r.signal}): ${String(r.stderr || r.stdout).split('\n').slice(-3).join(' ')}` }));
        continue;
      }
      const row = { ...got, hosts: 2 };
      console.log(JSON.stringify(row));
      rows.push(row);
    }
    const [t, p] = [rows.find((r) => r.tp === 2), rows.find((r) => r.pp === 2)];
    if (t && p) {
      console.log(JSON.stringify({
        ratio: 'pp2/tp2 over 2 hosts',
        decode_speedup: round((t.decode_ms_per_token as number) / (p.decode_ms_per_token as number)),
        four_prompts_speedup: round((t.together_ms as number) / (p.together_ms as number)),
      }));
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const command: CommandModule<object, Args> = {
  command: 'multinode',
  describe: 'allReduce across two hosts (network namespaces + sshd, needs root): tprun vs Open MPI over TCP',
  builder: (y) => y
    .option('generate', { type: 'boolean', default: false, describe: 'instead: brown-llama-a decode across the 2 hosts, tp 2 against pp 2' })
    .option('json', { type: 'boolean', default: true, describe: 'JSON lines on stdout (this benchmark prints nothing else there)' })
    .option('per-host', { type: 'number', default: 1, describe: 'ranks per host' })
    .option('sizes', { type: 'string', default: '1024,1048576,16777216', describe: 'message sizes in bytes (float32), comma separated' })
    .option('mpi', { type: 'boolean', default: true, describe: 'also run Open MPI (--no-mpi to skip)' })
    .option('secure', { type: 'boolean', default: false, describe: 'also measure tprun with --secure (CurveZMQ)' }) as never,
  handler: async (a) => {
    const sizes = a.sizes.split(',').map((x) => Number(x.trim()));
    const bad = sizes.find((s) => !Number.isInteger(s) || s < 4 || s % 4 !== 0);
    if (bad !== undefined || !Number.isInteger(a['per-host']) || a['per-host'] < 1) {
      process.stderr.write(`tprun bench multinode: ${bad !== undefined ? `--sizes: ${bad} is not a positive multiple of 4 bytes` : `--per-host: ${a['per-host']} is not a positive integer`}\n`);
      process.exit(2);
    }
    const why = whyNoHosts();
    if (why) {
      process.stderr.write(`tprun bench multinode: ${why}\n`);
      process.exit(1);
    }
    const H = await makeHosts(2);
    if (a.generate) {
      try { await runGenerate(H); } finally { H.teardown(); }
      return;
    }
    try {
      const rows: Row[] = [];
      const runs: [string, () => Promise<Row[] | string>][] = [['tprun', () => runTprun(H, a['per-host'], sizes.join(','), false)]];
      if (a.secure) runs.push(['tprun-secure', () => runTprun(H, a['per-host'], sizes.join(','), true)]);
      if (a.mpi) runs.push(['openmpi', () => runOpenMpi(H, a['per-host'], sizes)]);
      for (const [impl, run] of runs) {
        const got = await run();
        if (typeof got === 'string') {
          console.log(JSON.stringify({ impl, error: got }));
          continue;
        }
        for (const r of got) console.log(JSON.stringify(r));
        rows.push(...got);
      }
      for (const m of rows.filter((r) => r.impl !== 'openmpi')) {
        const o = rows.find((r) => r.impl === 'openmpi' && r.bytes === m.bytes);
        if (!o) continue;
        console.log(JSON.stringify({ ratio: `${m.impl}/openmpi`, op: 'allreduce', bytes: m.bytes, ranks: m.ranks, hosts: 2, us: round(m.us / o.us), busGBps: round(o.busGBps ? m.busGBps / o.busGBps : 0) }));
      }
    } finally {
      H.teardown();
    }
  },
};
export default command;
