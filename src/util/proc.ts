// What this process knows of processes by pid, in one place: the rendezvous watches joined ranks by pid,
// the /dev/shm sweep judges ring files by their creator's pid, the port leases by their owner's.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * This process's PID namespace as the inode of /proc/self/ns/pid ('pid:[4026531836]' gives
 * '4026531836'); undefined where unreadable (not Linux). A pid means something only within its
 * namespace: ranks in containers sharing a host (its network namespace, /dev/shm) may each have their own.
 */
export function pidNamespace(): string | undefined {
  try { return /^pid:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/pid'))?.[1]; } catch { return undefined; }
}

/** Whether process `pid` of this PID namespace has ended: kill(pid, 0) says ESRCH, or /proc shows it a
 *  zombie (ended, not yet reaped by its parent, it still answers kill). EPERM: alive, another user's.
 *  Where kill found it but its /proc entry is gone, it ended in between; where /proc itself cannot be read
 *  (not mounted, not Linux), kill's answer stands: alive. Judged ended wrongly, a live rank would fail its
 *  job, its /dev/shm files be swept, its port lease taken. */
export function processEnded(pid: number): boolean {
  try { process.kill(pid, 0); } catch (e) { return (e as NodeJS.ErrnoException).code === 'ESRCH'; }
  try { return /^\d+ \(.*\) [ZX]/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return existsSync('/proc/self/stat'); }
}
