// One rank of `tprun bench launch`: join the world, meet at a barrier, leave. With `tprun --trace`
// the phases show where launch time goes (process start and imports, rendezvous, barrier).
import { initWorld } from '../rank/world.js';
import { processStartUs, traceSince, traceSpan } from '../util/trace.js';

traceSince('node start + imports', processStartUs());
const world = await traceSpan('initWorld', () => initWorld());
await traceSpan('barrier', () => world.barrier());
await traceSpan('close', () => world.close());
