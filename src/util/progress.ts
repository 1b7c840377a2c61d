// Phase progress (`progress('convert', 226, 'tensors').tick()`). Under the tprun launcher it becomes
// events that the launcher draws as one bar per rank; alone, a bar on stderr when that is a terminal,
// and nothing otherwise (logs and pipes stay clean).
import { createRequire } from 'node:module';
import { encodeEvent, wantedEvents } from './events.js';

export interface Progress {
  tick(n?: number): void;
  done(): void;
}

/** Events are sent at most this often per phase (plus the final one). */
const EMIT_EVERY_MS = 100;

const NOOP: Progress = { tick() {}, done() {} };

export function progress(phase: string, total: number, unit?: string): Progress {
  if (wantedEvents().has('progress')) return launcherProgress(phase, total, unit);
  if (process.stderr.isTTY) return terminalProgress(phase, total, unit);
  return NOOP;
}

function launcherProgress(phase: string, total: number, unit?: string): Progress {
  let n = 0;
  let last = 0;
  let finished = false;
  const emit = (end: boolean) => process.stderr.write(encodeEvent({ k: 'p', phase, n, total, ...(unit ? { unit } : {}), ...(end ? { end } : {}) }));
  emit(false);
  return {
    tick(k = 1) {
      if (finished) return;
      n = Math.min(total, n + k);
      const now = performance.now();
      if (now - last >= EMIT_EVERY_MS) {
        last = now;
        emit(false);
      }
    },
    done() {
      if (finished) return;
      finished = true;
      n = total;
      emit(true);
    },
  };
}

function terminalProgress(phase: string, total: number, unit?: string): Progress {
  // cli-progress is CommonJS; loaded only when a bar is actually drawn.
  const { SingleBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const bar = new SingleBar(
    { format: `${phase} [{bar}] {value}/{total}${unit ? ` ${unit}` : ''} {duration_formatted}`, stream: process.stderr, hideCursor: true, clearOnComplete: false,
      // cli-progress turns the terminal's autowrap off while a bar is drawn (and leaves it off if the
      // process dies first): anything printed meanwhile would be cut at the screen edge.
      linewrap: true },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  let finished = false;
  return {
    tick(k = 1) {
      if (!finished) bar.increment(k);
    },
    done() {
      if (finished) return;
      finished = true;
      bar.update(total);
      bar.stop();
    },
  };
}
