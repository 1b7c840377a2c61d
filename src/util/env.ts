// Environment knobs read the one way everywhere: a value tprun does not understand is refused in one line
// naming the variable (an InputError, exit 2), never taken for the default. A switch spelt `off`, `no` or
// `false` that silently stayed on, or a size spelt `32k` that silently turned a path off, cost whoever set
// it a wrong measurement and no hint why.
import { InputError } from '../core/errors.js';

/** A switch: 0 (off) or 1 (on); unset or empty gives `dflt` (on unless said); any other value is refused in one line. */
export function onOff(name: string, env: NodeJS.ProcessEnv = process.env, dflt = true): boolean {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  if (v === '1') return true;
  if (v === '0') return false;
  throw new InputError(`${name}=${v}: not 0 (off) or 1 (on)`);
}

/** One of `choices`, or undefined where unset or empty; anything else is refused in one line naming them. */
export function oneOf<T extends string>(name: string, choices: readonly T[], env: NodeJS.ProcessEnv = process.env): T | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if ((choices as readonly string[]).includes(v)) return v as T;
  throw new InputError(`${name}=${v}: not ${choices.join(' or ')}`);
}

/** A whole number >= 0 (unset or empty: `dflt`, which may be undefined); anything else (a fraction, a negative, a unit) is refused in one line. */
export function wholeNumber<D extends number | undefined>(name: string, dflt: D, env: NodeJS.ProcessEnv = process.env): number | D {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new InputError(`${name}=${v}: not a whole number >= 0`);
  return n;
}

/** A JSON object (unset or empty: undefined); text that is not JSON, or JSON that is not an object (an
 *  array, a string, null), is refused in one line naming the variable rather than thrown as a SyntaxError. */
export function jsonObject(name: string, env: NodeJS.ProcessEnv = process.env): Record<string, unknown> | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  let o: unknown;
  try {
    o = JSON.parse(v);
  } catch (e) {
    throw new InputError(`${name}=${v}: not JSON (${(e as Error).message})`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new InputError(`${name}=${v}: not a JSON object ({"key": value, ...})`);
  return o as Record<string, unknown>;
}
