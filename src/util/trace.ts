// Spans for a Chrome/Perfetto trace. Under `tprun --trace FILE` each span goes to the launcher as an
// event (see src/util/events.ts), which merges all ranks onto one timeline (pid = rank). Alone, a
// process writes its own trace to $TPRUN_TRACE at exit; otherwise spans cost one env lookup.
import { writeFileSync, renameSync } from 'node:fs';
import { encodeEvent, nowUs, wantedEvents, type TraceEvent } from './events.js';

type Mode = 'off' | 'launcher' | 'file';
let mode: Mode | undefined;
const local: TraceEvent[] = [];

function currentMode(): Mode {
  if (mode === undefined) {
    if (wantedEvents().has('trace')) mode = 'launcher';
    else if (process.env.TPRUN_TRACE) {
      mode = 'file';
      const file = process.env.TPRUN_TRACE;
      process.on('exit', () => {
        if (local.length) writeChromeTrace(file, [{ pid: 0, label: 'process', events: local }]);
      });
    } else mode = 'off';
  }
  return mode;
}

function record(ev: TraceEvent): void {
  if (mode === 'launcher') process.stderr.write(encodeEvent(ev));
  else local.push(ev);
}

/**
 * For a launcher running inside a traced process (runDistributed with $TPRUN_TRACE): takes the spans
 * this process recorded so far into the job's merged trace, so the process's own exit handler does not
 * overwrite the merged file with them.
 */
export function adoptLocalTrace(): TraceEvent[] {
  return local.splice(0, local.length);
}

/** Runs `fn` and records it as a span named `name` (also when it throws: then args.error is set). */
export async function traceSpan<T>(name: string, fn: () => Promise<T> | T, args?: object): Promise<T> {
  if (currentMode() === 'off') return await fn();
  const ts = nowUs();
  try {
    const out = await fn();
    record({ k: 't', name, ts, dur: nowUs() - ts, ...(args ? { args: { ...args } } : {}) });
    return out;
  } catch (e) {
    record({ k: 't', name, ts, dur: nowUs() - ts, args: { ...(args ?? {}), error: String((e as Error)?.message ?? e) } });
    throw e;
  }
}

/**
 * Records a span that began at `startUs` (µs since the epoch, e.g. `processStartUs()`) and ends now:
 * for stretches that no single function call covers, like process startup.
 */
export function traceSince(name: string, startUs: number, args?: object): void {
  if (currentMode() === 'off') return;
  record({ k: 't', name, ts: startUs, dur: nowUs() - startUs, ...(args ? { args: { ...args } } : {}) });
}

/** When this process started (µs since the epoch), on the clock all trace events use. */
export function processStartUs(): number {
  return Math.round(performance.timeOrigin * 1000);
}

/** A point in time (a zero-length marker on the timeline). */
export function traceInstant(name: string, args?: object): void {
  if (currentMode() === 'off') return;
  record({ k: 't', name, ts: nowUs(), ...(args ? { args: { ...args } } : {}) });
}

/**
 * A counter sample: Perfetto draws each key of `values` as a track of its own under `name`
 * (memory in bytes, latencies in ms), beside the spans of the same rank.
 */
export function traceCounter(name: string, values: Record<string, number>): void {
  if (currentMode() === 'off') return;
  record({ k: 't', name, ts: nowUs(), c: true, args: { ...values } });
}

export interface TraceProcess {
  pid: number;
  label: string;
  events: TraceEvent[];
  /** Spans on a second row of the same process (the launcher's view of it). */
  outer?: TraceEvent[];
}

/**
 * Chrome trace JSON ("Trace Event Format", read by chrome://tracing and ui.perfetto.dev). Timestamps are
 * microseconds relative to `originUs` (the earliest event by default) on the wall clock all ranks share.
 */
export function chromeTrace(procs: TraceProcess[], originUs?: number): object {
  const all = procs.flatMap((p) => [...p.events, ...(p.outer ?? [])]);
  const t0 = originUs ?? (all.length ? Math.min(...all.map((e) => e.ts)) : 0);
  const traceEvents: object[] = [];
  for (const p of procs) {
    traceEvents.push({ ph: 'M', name: 'process_name', pid: p.pid, tid: 0, args: { name: p.label } });
    traceEvents.push({ ph: 'M', name: 'process_sort_index', pid: p.pid, tid: 0, args: { sort_index: p.pid } });
    for (const [tid, list] of [[0, p.events], [1, p.outer ?? []]] as const) {
      for (const e of list) {
        const base = { name: e.name, pid: p.pid, tid, ts: e.ts - t0, ...(e.args ? { args: e.args } : {}) };
        traceEvents.push(e.c ? { ...base, ph: 'C' } : e.dur !== undefined ? { ...base, ph: 'X', dur: e.dur } : { ...base, ph: 'i', s: 't' });
      }
    }
    if (p.outer?.length) traceEvents.push({ ph: 'M', name: 'thread_name', pid: p.pid, tid: 1, args: { name: 'launcher' } });
  }
  return { traceEvents, displayTimeUnit: 'ms' };
}

/** Writes the trace to a temporary sibling and renames it, so a reader never sees half a file. */
export function writeChromeTrace(file: string, procs: TraceProcess[], originUs?: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(chromeTrace(procs, originUs)));
  renameSync(tmp, file);
}
