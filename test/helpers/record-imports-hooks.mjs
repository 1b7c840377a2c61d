// Module resolution hooks for record-imports.mjs (they run on node's loader thread).
import { appendFileSync } from 'node:fs';

export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.RECORD_IMPORTS, `${process.pid} ${r.url}\n`);
  return r;
}
