// `node shm-ring-app.js TAG RANK`: makes this rank's /dev/shm ring file (which sweeps stale ones first),
// prints {"path", "pid"} as one line, and holds the file until stdin closes (a live rank in rendezvous).
import { ShmOut } from '../../dist/rank/shm-link.js';

const out = new ShmOut(process.argv[2], Number(process.argv[3]), 2, 2);
process.stdout.write(`${JSON.stringify({ path: out.info.path, pid: process.pid })}\n`);
process.stdin.resume();
process.stdin.on('end', () => { out.close(); process.exit(0); });
