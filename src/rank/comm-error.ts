// The world's error class, one per process: a rank's world runs from dist/rank/world.bundle.cjs (see
// ./world.ts) while other code may load these modules as ES modules, and `e instanceof CommError` must hold
// whichever copy threw it (the dual-package hazard, nodejs.org/api/packages.html#dual-package-hazard). The
// first copy to load registers its class under a global symbol; every later copy hands out that one.
// A class expression, so that the class itself (its .name, what stacks and inspect show) is CommError.
const CommErrorClass = class CommError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommError';
  }
};

const KEY = Symbol.for('tprun.CommError');
const registry = globalThis as { [KEY]?: typeof CommErrorClass };

/** A collective or the world failed (a peer died, timed out, sent what does not fit, ...). */
export const CommError: typeof CommErrorClass = (registry[KEY] ??= CommErrorClass);
export type CommError = InstanceType<typeof CommErrorClass>;
