// Preloaded (NODE_OPTIONS=--import=...): records the URL of every module this process and the ranks it
// starts resolve into $RECORD_IMPORTS ("pid url" lines), so a test can prove what a launch loads: ES
// modules through the loader's resolve hook, CommonJS ones (what a bundle such as dist/rank/world.bundle.cjs
// requires; node 20's hooks do not see require) through the CommonJS resolver.
import { register, createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

if (process.env.RECORD_IMPORTS) {
  const out = process.env.RECORD_IMPORTS;
  register('./record-imports-hooks.mjs', import.meta.url);
  const Module = createRequire(import.meta.url)('node:module');
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function (request, ...rest) {
    const f = resolve.call(this, request, ...rest);
    appendFileSync(out, `${process.pid} ${f.startsWith('/') ? pathToFileURL(f).href : f}\n`);
    return f;
  };
}
