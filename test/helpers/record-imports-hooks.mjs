// Module resolution hooks for record-imports.mjs (they run on node's loader thread).
import { appendFileSync } from 'node:fs';

const out = process.env.RECORD_IMPORTS ?? '/dev/null';

export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(out, `${process.pid} ${r.url}\n`);
  return r;
}
