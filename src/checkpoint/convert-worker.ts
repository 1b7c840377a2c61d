// A worker thread of convertLocal (convert.ts): writes one rank's rank{r}.safetensors with the same code
// a rank process runs (openSource, rankWork, writeRankFile), so rank files are read, cast and written
// on as many threads as there are ranks. Different files take no common lock in the kernel, so their
// writes proceed at once, where one thread's reads and casts came between them before.

import { parentPort, workerData } from 'node:worker_threads';
import { isInputError } from '../core/errors.js';
import { type ConvertOptions, openSource, rankWork, writeRankFile } from './convert.js';
import { ioStats } from './ranged.js';

/** Worker → main: a tensor written (its bytes), or the end (bytes read, or the failure). */
export type ConvertWorkerMessage =
  | { kind: 'tensor'; bytes: number }
  | { kind: 'done'; bytesRead: number; bytesCopied: number }
  | { kind: 'error'; message: string; input: boolean; stack?: string };

const { o, tmp, rank, stop } = workerData as { o: ConvertOptions; tmp: string; rank: number; stop: Int32Array };
// Another rank failed (the main thread sets `stop`): stop at the next chunk (the main thread removes the
// directory). Shared memory, not a message: copies inside the kernel are synchronous and never yield to
// the event loop, so a message would wait until the whole file was written.
const signal = { get aborted(): boolean { return Atomics.load(stop, 0) !== 0; } };
const post = (m: ConvertWorkerMessage) => parentPort!.postMessage(m);

try {
  const { config, source } = openSource(o);
  try {
    const read0 = ioStats.bytesRead;
    let bytesCopied = 0;
    await writeRankFile(tmp, rankWork(source, config, rank), { clamp: o.clamp, signal, onTensor: (bytes) => post({ kind: 'tensor', bytes }), onCopied: (k) => { bytesCopied += k; } });
    post({ kind: 'done', bytesRead: ioStats.bytesRead - read0, bytesCopied });
  } finally {
    source.close();
  }
} catch (e) {
  post({ kind: 'error', message: String((e as Error)?.message ?? e), input: isInputError(e), stack: (e as Error)?.stack });
}
parentPort!.close();
