// `node pidns-app.js APP ARGS...`: runs APP as this rank; with APP_PID_NS=1, inside a PID namespace of its
// own (unshare --pid --fork --mount-proc, root only), at a pid this host's namespace has nobody at, as a
// rank in its own container would be (same host name and network, other pids).
import { spawnSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';

const [app, ...args] = process.argv.slice(2);
if (process.env.APP_PID_NS === '1') {
  const inner = `echo 3999990 > /proc/sys/kernel/ns_last_pid && APP_PID_NS=inside "$0" "$@"`;
  // setpriv: unshare dies with this process, and --kill-child takes the namespace with it.
  const r = spawnSync('setpriv', ['--pdeathsig', 'SIGKILL', 'unshare', '--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c', inner, process.execPath, process.argv[1], app, ...args], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
if (process.env.APP_PID_NS === 'inside') process.stderr.write(`app: pid namespace ${readlinkSync('/proc/self/ns/pid')}, pid ${process.pid}\n`);
process.argv = [process.argv[0], app, ...args];
await import(app);
