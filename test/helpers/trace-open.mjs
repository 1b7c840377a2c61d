// Preloaded into ranks (NODE_OPTIONS=--import=...): records every file a rank opens through node:fs into
// $TRACE_OPEN_DIR/opened.<rank>.log, so a test can prove which ranks touched model files.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const dir = process.env.TRACE_OPEN_DIR;
const rank = process.env.TPRUN_RANK;
if (dir && rank !== undefined) {
  const log = `${dir}/opened.${rank}.log`;
  const origAppend = fs.appendFileSync;
  const note = (p) => { try { origAppend(log, `${String(p)}\n`); } catch {} };
  for (const name of ['openSync', 'open', 'readFileSync', 'readFile', 'createReadStream', 'statSync']) {
    const orig = fs[name];
    fs[name] = function (p, ...rest) { if (typeof p === 'string' || p instanceof URL) note(p); return orig.call(this, p, ...rest); };
  }
  for (const name of ['open', 'readFile']) {
    const orig = fs.promises[name];
    fs.promises[name] = function (p, ...rest) { if (typeof p === 'string' || p instanceof URL) note(p); return orig.call(this, p, ...rest); };
  }
  note('(trace started)');
  syncBuiltinESMExports();
}
