// A Slurm cluster on the namespace hosts of ../../dist/bench/netns-hosts.js: munged (one key for the
// cluster), slurmctld in the head namespace, one slurmd per host inside that host's namespaces (network,
// host name, mounts: entered through its sshd). Config, keys, state and logs live in a temp dir.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

const need = ['/usr/sbin/slurmctld', '/usr/sbin/slurmd', '/usr/bin/srun', '/usr/sbin/munged'];

export function whyNoSlurm() {
  const missing = need.filter((p) => !existsSync(p));
  return missing.length ? `Slurm tests need slurm-wlm and munge (missing ${missing.join(', ')})` : undefined;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startSlurm(H) {
  const dir = join(H.dir, 'slurm');
  mkdirSync(join(dir, 'state'), { recursive: true, mode: 0o700 });
  const procs = [];
  const log = (name) => join(dir, `${name}.log`);
  const stop = () => {
    for (const p of procs) try { p.kill('SIGKILL'); } catch {}
  };
  try {
    // munge: a 1 KiB key made for this cluster; its socket is a path, so every namespace reaches it.
    writeFileSync(join(dir, 'munge.key'), randomBytes(1024), { mode: 0o400 });
    const sock = join(dir, 'munge.sock');
    const munged = spawn('/usr/sbin/munged', ['--foreground', '--force', `--socket=${sock}`, `--key-file=${join(dir, 'munge.key')}`,
      `--pid-file=${join(dir, 'munged.pid')}`, `--log-file=${log('munged')}`, `--seed-file=${join(dir, 'munged.seed')}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    procs.push(munged);
    let merr = '';
    munged.stderr.on('data', (d) => (merr += d));
    for (let t = 0; !existsSync(sock); t++) {
      if (t > 100 || munged.exitCode !== null) throw new Error(`munged did not start: ${merr}`);
      await sleep(50);
    }
    const ctl = `${H.head.replace(/-h$/, '')}-ctl`;
    const conf = join(dir, 'slurm.conf');
    writeFileSync(conf, [
      'ClusterName=tprun',
      `SlurmctldHost=${ctl}(${H.subnet}.1)`,
      'SlurmctldPort=6817',
      'SlurmdPort=6818',
      'AuthType=auth/munge',
      `AuthInfo=socket=${sock}`,
      'CredType=cred/munge',
      'SlurmUser=root',
      'SlurmdUser=root',
      `StateSaveLocation=${join(dir, 'state')}`,
      `SlurmdSpoolDir=${join(dir, 'spool-%n')}`,
      `SlurmctldPidFile=${join(dir, 'slurmctld.pid')}`,
      `SlurmdPidFile=${join(dir, 'slurmd-%n.pid')}`,
      `SlurmctldLogFile=${log('slurmctld')}`,
      `SlurmdLogFile=${join(dir, 'slurmd-%n.log')}`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'JobCompType=jobcomp/none',
      'SchedulerType=sched/builtin',
      'SelectType=select/linear',
      'MpiDefault=none',
      'ReturnToService=2',
      'SlurmctldTimeout=30',
      'SlurmdTimeout=30',
      'InactiveLimit=0',
      'KillWait=2',
      // Node sizes as written here, whatever the machine has (the test hosts share its CPUs).
      'SlurmdParameters=config_overrides',
      'MailProg=/bin/true',
      ...H.hosts.map((h) => `NodeName=${h.hostName} NodeAddr=${h.addr} CPUs=4 State=UNKNOWN`),
      `PartitionName=test Nodes=${H.hosts.map((h) => h.hostName).join(',')} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES`,
      '',
    ].join('\n'));
    const v2 = execFileSync('stat', ['-f', '-c', '%T', '/sys/fs/cgroup'], { encoding: 'utf8' }).trim() === 'cgroup2fs';
    // slurmd reads cgroup.conf beside slurm.conf; with v2 it must not ask systemd (there is none here).
    writeFileSync(join(dir, 'cgroup.conf'), v2 ? 'CgroupPlugin=cgroup/v2\nIgnoreSystemd=yes\n' : 'CgroupPlugin=cgroup/v1\n');
    const env = { ...process.env, SLURM_CONF: conf };
    const ctld = spawn('ip', ['netns', 'exec', H.head, 'unshare', '--uts', 'sh', '-c', `hostname ${ctl} && exec /usr/sbin/slurmctld -D -i -f ${conf}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(ctld);
    let cerr = '';
    /** @type {(() => string)[]} */
    const slurmdOutput = [];
    ctld.stderr.on('data', (d) => (cerr += d));
    ctld.stdout.on('data', (d) => (cerr += d));
    for (const h of H.hosts) {
      // slurmd insists on a cgroup file system; the host's mount namespace (a fresh /sys) has none yet.
      // Mount what the machine uses: the cgroup v1 hierarchies, or the unified v2 one.
      const cg = v2
        ? 'mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup'
        : 'mountpoint -q /sys/fs/cgroup/freezer || { mount -t tmpfs tmpfs /sys/fs/cgroup && for c in cpuset memory devices freezer cpu cpuacct pids; do mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done; mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; }';
      const spool = join(dir, `spool-${h.hostName}`);
      const d = spawn('nsenter', ['--target', String(h.sshdPid), '--net', '--uts', '--mount', 'sh', '-c', `${cg}; mkdir -p ${spool} && exec /usr/sbin/slurmd -D -f ${conf}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let e = '';
      d.stderr.on('data', (x) => (e += x));
      d.stdout.on('data', (x) => (e += x));
      slurmdOutput.push(() => e);
      procs.push(d);
    }
    // Ready when every node is idle.
    for (let t = 0; ; t++) {
      let out = '';
      try {
        out = execFileSync('ip', ['netns', 'exec', H.head, 'sinfo', '-h', '-N', '-o', '%N %t'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) { out = String(e.stderr); }
      const idle = out.split('\n').filter((l) => / idle$/.test(l)).length;
      if (idle === H.hosts.length) break;
      if (t > 150) throw new Error(`Slurm nodes not idle: ${out} ${cerr} ${slurmdOutput.map((f) => f()).join(' ')}`);
      await sleep(200);
    }
    return { conf, env: { SLURM_CONF: conf }, srun: (args) => ['ip', ['netns', 'exec', H.head, 'srun', ...args]], stop };
  } catch (e) {
    stop();
    throw e;
  }
}
