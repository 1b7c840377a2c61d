// The names of shared-memory ring files (./shm-link.ts), apart so the wire schema (./wire-schema.ts),
// which admits a peer's path only if it is such a name, needs nothing but this pattern.

/**
 * A ring file's name carries its creator's pid AND PID namespace (the inode of /proc/self/ns/pid), since
 * the sweep (./shm-link.ts) judges the creator by its pid, and a pid means something only in its own
 * namespace: ranks in containers on one host that share /dev/shm (or a network namespace) but not pids have
 * pids this process cannot see, and their live files were swept. The same reason as rendezvous.ts's
 * pidWatchable. `ns0`: the creator could not read its namespace; such a file is never judged by pid.
 * The `ns` marker is no hex digit: an older tprun's sweep (/^tprun-HEX-N-PID-HEX$/) never matches these
 * names, so it cannot judge them by a pid of another namespace either.
 */
export function ringFileName(jobTag: string, rank: number, pid: number, nsInode: string, rand: string): string {
  return `tprun-${jobTag}-${rank}-${pid}-ns${nsInode}-${rand}`;
}

/** A ring file's name: [1] the creator's pid, [2] its PID namespace's inode, absent in the names of tprun
 *  before the namespace was recorded (the creator's namespace unknown). */
export const RING_FILE_NAME = /^tprun-[0-9a-f]+-\d+-(\d+)(?:-ns(\d+))?-[0-9a-f]+$/;
