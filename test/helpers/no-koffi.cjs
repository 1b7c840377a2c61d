// Preloaded with --require (NODE_OPTIONS, so rank processes and worker threads get it too): this process
// behaves as if the optional koffi were not installed. tprun loads it through require alone
// (src/util/libc.ts), so failing its resolution there is all it takes.
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'koffi') throw Object.assign(new Error("Cannot find module 'koffi' (hidden by test/helpers/no-koffi.cjs)"), { code: 'MODULE_NOT_FOUND' });
  return resolve.call(this, request, ...rest);
};
