// The side channel from ranks to the launcher: progress and trace events travel as single lines on the
// rank's stderr, each starting with a marker that ordinary text never contains (ASCII record/unit
// separators). Why stderr and not an extra fd: it reaches the launcher from any descendant of the rank
// (`sh -c`, wrappers) and from remote ranks through ssh, with no fd-inheritance guesswork. Each event is
// one write() well under PIPE_BUF, so it arrives contiguous even when several processes share the pipe;
// the launcher cuts it out of the byte stream and the user's output around it is passed on untouched.
// The format lives here, below both its writers (util/progress, util/trace) and its reader (the launcher),
// so that neither side imports the other.

export const EVENT_MARK = '\u001etprun\u001f';
/** Which events the launcher wants from ranks, comma separated: `progress`, `trace`. */
export const EVENTS_ENV = 'TPRUN_EVENTS';

/** Progress of a phase on one rank (`n` of `total` units); `end` marks the phase done. */
export interface ProgressEvent {
  k: 'p';
  phase: string;
  n: number;
  total: number;
  unit?: string;
  end?: boolean;
}
/**
 * A finished span (`dur` set), an instant, or with `c` set a counter sample (the numbers in `args` at
 * `ts`: Chrome's "ph":"C"); `ts`/`dur` in microseconds since the Unix epoch.
 */
export interface TraceEvent {
  k: 't';
  name: string;
  ts: number;
  dur?: number;
  c?: true;
  args?: Record<string, unknown>;
}
export type RankEvent = ProgressEvent | TraceEvent;

/** The events this process should emit, or none when no tprun launcher listens. */
export function wantedEvents(env: NodeJS.ProcessEnv = process.env): Set<string> {
  const v = env[EVENTS_ENV];
  return new Set(v ? v.split(',') : []);
}

/** Whether this process's spans are recorded (./trace.ts): a launcher asks for them, or $TPRUN_TRACE names a file. */
export const tracing = (env: NodeJS.ProcessEnv = process.env): boolean => wantedEvents(env).has('trace') || !!env.TPRUN_TRACE;

export function encodeEvent(ev: RankEvent): string {
  return `${EVENT_MARK}${JSON.stringify(ev)}\n`;
}

/** Microseconds since the Unix epoch: one clock for every rank of a machine. */
export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}
