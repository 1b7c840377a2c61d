// Rank output on the launcher's stdout/stderr: lines of different ranks never interleave mid-line,
// `--tag-output` prefixes each line with `[rank] `, and progress/trace events are cut out of stderr.
// tprun's own error lines (`tprun: ...`, `tprun convert: ...`) that several ranks print alike, because
// each of them met the same bad input, are shown once (as Open MPI aggregates the same help message from
// many processes, orte_show_help's aggregation): the launcher's line names the rank that ended the job.
import { EVENT_MARK, type RankEvent } from '../util/events.js';

const NL = 0x0a;
const MARK = Buffer.from(EVENT_MARK);
const TPRUN = Buffer.from('tprun');
const MAX_SHOWN = 4096;
/** An unfinished line is shown after this long without more bytes (prompts, progress dots). */
const PARTIAL_FLUSH_MS = 100;
/** A marker without its newline after this many bytes is not an event: pass it through as text. */
const MAX_EVENT_BYTES = 1 << 16;

export type StreamName = 'stdout' | 'stderr';

/** Where finished text goes; the renderer swaps it out while progress bars own the terminal. */
export interface TextSink {
  write(stream: StreamName, data: Buffer): void;
}

export const directSink: TextSink = {
  write(stream, data) {
    (stream === 'stdout' ? process.stdout : process.stderr).write(data);
  },
};

/**
 * Serializes the writes of all ranks onto the two output streams. A rank whose unfinished line was
 * flushed owns the rest of that terminal line: if another rank writes first, a newline is inserted and
 * the continuation gets its tag again.
 */
export class OutputMux {
  private open: Record<StreamName, number | null> = { stdout: null, stderr: null };
  private tags = new Map<number, Buffer>();
  /** Ranks whose stderr is in the middle of a line (their next bytes do not start one). */
  private midLine = new Set<number>();
  /** tprun error lines already shown (with rank numbers blanked), and the rank that showed each. */
  private shown = new Map<string, number>();

  /** `label` names a rank inside the tag (`[label] `); the rank number by default. */
  constructor(
    private readonly tag: boolean,
    public sink: TextSink = directSink,
    private readonly label: (rank: number) => string = String,
  ) {}

  private tagOf(rank: number): Buffer {
    let t = this.tags.get(rank);
    if (!t) this.tags.set(rank, (t = Buffer.from(`[${this.label(rank)}] `)));
    return t;
  }

  /** `data` is whole lines, except that the last may be unfinished (then the line stays open). */
  write(stream: StreamName, rank: number, data: Buffer): void {
    if (stream === 'stderr') data = this.dropRepeats(rank, data);
    if (data.length === 0) return;
    const parts: Buffer[] = [];
    const owner = this.open[stream];
    let continuing = owner === rank;
    if (owner !== null && owner !== rank) parts.push(Buffer.from('\n'));
    if (!this.tag) {
      parts.push(data);
    } else {
      let start = 0;
      while (start < data.length) {
        const nl = data.indexOf(NL, start);
        const end = nl < 0 ? data.length : nl + 1;
        if (!continuing) parts.push(this.tagOf(rank));
        continuing = false;
        parts.push(data.subarray(start, end));
        start = end;
      }
    }
    this.open[stream] = data[data.length - 1] === NL ? null : rank;
    this.sink.write(stream, parts.length === 1 ? parts[0] : Buffer.concat(parts));
  }

  /** `data` without the whole tprun error lines that another rank already printed. */
  private dropRepeats(rank: number, data: Buffer): Buffer {
    if (data.length === 0) return data;
    const atStart = !this.midLine.has(rank);
    if (data[data.length - 1] === NL) this.midLine.delete(rank);
    else this.midLine.add(rank);
    if (data.indexOf(TPRUN) < 0) return data;
    const keep: Buffer[] = [];
    let dropped = false;
    for (let start = 0; start < data.length; ) {
      const nl = data.indexOf(NL, start);
      const end = nl < 0 ? data.length : nl + 1;
      const line = data.subarray(start, end);
      const whole = nl >= 0 && (start > 0 || atStart);
      if (whole && line.subarray(0, TPRUN.length).equals(TPRUN)) {
        const key = line.toString('utf8').replace(/\brank \d+\b/g, 'rank #');
        const first = this.shown.get(key);
        // Bounded: a chatty rank's many different lines must not grow the launcher without end.
        if (first === undefined) {
          if (this.shown.size < MAX_SHOWN) this.shown.set(key, rank);
        } else if (first !== rank) {
          dropped = true;
          start = end;
          continue;
        }
      }
      keep.push(line);
      start = end;
    }
    return dropped ? Buffer.concat(keep) : data;
  }

  /** Ends any open line so that launcher messages start on a fresh one. */
  closeLines(): void {
    for (const s of ['stdout', 'stderr'] as const) {
      if (this.open[s] !== null) this.sink.write(s, Buffer.from('\n'));
      this.open[s] = null;
    }
  }
}

/** One rank's stdout or stderr: splits bytes into lines (and events, on stderr) for the mux. */
export class RankStream {
  private pending: Buffer = Buffer.alloc(0);
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly mux: OutputMux,
    private readonly stream: StreamName,
    private readonly rank: number,
    private readonly onEvent?: (ev: RankEvent) => void,
  ) {}

  push(chunk: Buffer): void {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    if (this.timer) clearTimeout(this.timer), (this.timer = undefined);
    let held = Buffer.alloc(0); // an unfinished user line that an event interrupted
    for (;;) {
      const m = this.onEvent ? buf.indexOf(MARK) : -1;
      const text = m < 0 ? buf : buf.subarray(0, m);
      // Whole lines go out now; the unfinished tail waits for its newline.
      const lastNl = text.lastIndexOf(NL);
      if (lastNl >= 0) {
        this.mux.write(this.stream, this.rank, held.length ? Buffer.concat([held, text.subarray(0, lastNl + 1)]) : text.subarray(0, lastNl + 1));
        held = Buffer.from(text.subarray(lastNl + 1));
      } else {
        held = held.length ? Buffer.concat([held, text]) : Buffer.from(text);
      }
      if (m < 0) break;
      const end = buf.indexOf(NL, m);
      if (end < 0) {
        if (buf.length - m > MAX_EVENT_BYTES) {
          held = Buffer.concat([held, buf.subarray(m)]);
          buf = Buffer.alloc(0);
          break;
        }
        // The event's tail is still in flight: keep the held text and the event start; the held text
        // holds no marker, so the next push re-scans the concatenation correctly.
        this.pending = Buffer.concat([held, buf.subarray(m)]);
        return;
      }
      const ev = parseEvent(buf.subarray(m + MARK.length, end));
      if (ev) this.onEvent!(ev);
      else held = Buffer.concat([held, buf.subarray(m, end + 1)]);
      buf = buf.subarray(end + 1);
    }
    this.pending = held;
    if (held.length) this.timer = setTimeout(() => this.flushPartial(), PARTIAL_FLUSH_MS).unref();
  }

  private flushPartial(): void {
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const m = this.onEvent ? this.pending.indexOf(MARK) : -1;
    if (m === 0) return; // an incomplete event: wait for the rest
    const text = m < 0 ? this.pending : this.pending.subarray(0, m);
    this.mux.write(this.stream, this.rank, Buffer.from(text));
    this.pending = m < 0 ? Buffer.alloc(0) : Buffer.from(this.pending.subarray(m));
  }

  /** End of the stream: whatever is left is shown (an event cut short is shown as text). */
  end(): void {
    if (this.timer) clearTimeout(this.timer), (this.timer = undefined);
    if (this.pending.length) this.mux.write(this.stream, this.rank, this.pending);
    this.pending = Buffer.alloc(0);
  }
}

function parseEvent(json: Buffer): RankEvent | undefined {
  try {
    const ev = JSON.parse(json.toString('utf8'));
    if (ev && (ev.k === 'p' || ev.k === 't')) return ev as RankEvent;
  } catch {
    // not an event after all
  }
  return undefined;
}
