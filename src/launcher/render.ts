// How the launcher shows the ranks' progress: one cli-progress bar per rank on a terminal, one summary
// line per finished phase elsewhere, nothing with --quiet/--json.
import { createRequire } from 'node:module';
import type { MultiBar, SingleBar } from 'cli-progress';
import type { ProgressEvent } from '../util/events.js';
import { directSink, type OutputMux, type TextSink } from './output.js';

export type RenderMode = 'bars' | 'lines' | 'none';

export function renderMode(opts: { quiet?: boolean; json?: boolean }): RenderMode {
  if (opts.quiet || opts.json) return 'none';
  return process.stderr.isTTY ? 'bars' : 'lines';
}

export class ProgressView {
  private multi: MultiBar | undefined;
  private bars = new Map<number, SingleBar>();
  private started = new Map<string, number>();
  private closed = false;

  constructor(
    private readonly mode: RenderMode,
    private readonly mux: OutputMux,
  ) {}

  onProgress(rank: number, ev: ProgressEvent): void {
    if (this.closed) return;
    if (this.mode === 'lines') {
      const key = `${rank}\0${ev.phase}`;
      if (!this.started.has(key)) this.started.set(key, performance.now());
      if (ev.end) {
        const s = (performance.now() - this.started.get(key)!) / 1000;
        this.started.delete(key);
        this.mux.closeLines();
        process.stderr.write(`tprun: rank ${rank}: ${ev.phase} done (${ev.total}${ev.unit ? ` ${ev.unit}` : ''}, ${s.toFixed(1)}s)\n`);
      }
    } else if (this.mode === 'bars') {
      this.bar(rank, ev);
    }
  }

  private bar(rank: number, ev: ProgressEvent): void {
    if (!this.multi) {
      const { MultiBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
      this.mux.closeLines();
      this.multi = new MultiBar(
        {
          format: 'rank {rank} {phase} [{bar}] {value}/{total} {unit}',
          stream: process.stderr,
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
          autopadding: true,
          // Left to itself cli-progress turns the terminal's autowrap off while bars are drawn, and the
          // generated text that ranks print meanwhile would be cut at the screen edge.
          linewrap: true,
        },
        Presets.shades_classic,
      );
      this.mux.sink = this.barSink(this.multi);
    }
    const payload = { rank, phase: ev.phase, unit: ev.unit ?? '' };
    let b = this.bars.get(rank);
    if (!b) {
      b = this.multi.create(ev.total, ev.n, payload);
      this.bars.set(rank, b);
    } else {
      b.setTotal(ev.total);
      b.update(ev.n, payload);
    }
  }

  /** While bars are drawn, terminal output goes through the bars' log so lines appear above them. */
  private barSink(multi: MultiBar): TextSink {
    return {
      write(stream, data) {
        const toTerminal = stream === 'stderr' || process.stdout.isTTY;
        if (!toTerminal) return directSink.write(stream, data);
        const text = data.toString('utf8');
        multi.log(text.endsWith('\n') ? text : `${text}\n`);
      },
    };
  }

  /** Ends the display for good (the job is ending or the launcher has something to say). */
  stop(): void {
    this.closed = true;
    if (this.multi) {
      // Lines handed to log() are drawn on the next redraw; stop() alone would drop the last ones.
      (this.multi as unknown as { update(): void }).update();
      this.multi.stop();
      this.mux.sink = directSink;
      this.multi = undefined;
    }
  }
}
