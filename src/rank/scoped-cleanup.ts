// Cleanup that must run however the process ends during a window (files other processes would find
// otherwise), and that leaves nothing behind once the window closes: a library must not keep
// process-wide handlers that change what a signal does to its host program.

const SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

/**
 * Runs `cleanup` (synchronous, idempotent) on exit or on SIGTERM/SIGINT/SIGHUP until the returned
 * function is called. On a signal nobody else listens for, the signal is raised again once our handler
 * is gone, so the process still dies of it (exit status and all) as it would have without us.
 */
export function cleanupOnEnd(cleanup: () => void): () => void {
  let open = true;
  const release = () => {
    if (!open) return;
    open = false;
    for (const s of SIGNALS) process.off(s, onSignal);
    process.off('exit', onExit);
  };
  function onExit() {
    cleanup();
  }
  function onSignal(sig: NodeJS.Signals) {
    cleanup();
    release();
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  }
  for (const s of SIGNALS) process.on(s, onSignal);
  process.on('exit', onExit);
  return release;
}
