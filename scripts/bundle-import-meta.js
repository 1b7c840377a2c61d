// Injected into the world bundle by scripts/bundle.mjs: what `import.meta.url` means in the bundled ES
// modules (src/util/libc.ts requires koffi relative to it) is the URL of the bundle file itself.
export const bundleUrl = require('node:url').pathToFileURL(__filename).href;
