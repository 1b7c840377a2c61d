// One rank of `tprun bench launch`: join the world, meet at a barrier, leave, as a rank program that
// imports 'tprun/world' does. Traced (`tprun --trace`, or TPRUN_TRACE) the phases show where launch time
// goes (process start and imports, rendezvous, barrier); untraced, the trace module is not even loaded,
// so the benchmark times what such a program pays and nothing of its own.
import { initWorld } from '../rank/world.js';
import { tracing } from '../util/events.js';

const trace = tracing() ? await import('../util/trace.js') : undefined;
const span = <T>(name: string, fn: () => Promise<T>): Promise<T> => (trace ? trace.traceSpan(name, fn) : fn());

trace?.traceSince('node start + imports', trace.processStartUs());
const world = await span('initWorld', () => initWorld());
await span('barrier', () => world.barrier());
await span('close', () => world.close());
