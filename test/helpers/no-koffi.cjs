// Preloaded with --require (NODE_OPTIONS, so rank processes and worker threads get it too): this process
// behaves as if the optional koffi were not installed. tprun loads it through require, or its prebuilt
// binary straight through process.dlopen (src/util/libc.ts, prebuilt): failing both is all it takes.
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'koffi') throw Object.assign(new Error("Cannot find module 'koffi' (hidden by test/helpers/no-koffi.cjs)"), { code: 'MODULE_NOT_FOUND' });
  return resolve.call(this, request, ...rest);
};
const dlopen = process.dlopen;
process.dlopen = function (module, filename, ...rest) {
  if (/[\\/]koffi\.node$/.test(String(filename))) throw Object.assign(new Error(`Cannot open ${filename} (hidden by test/helpers/no-koffi.cjs)`), { code: 'ERR_DLOPEN_FAILED' });
  return dlopen.call(this, module, filename, ...rest);
};
