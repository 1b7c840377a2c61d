// For lookups a test relies on (Map.get, Array.find): a missing value fails as an assertion that names
// it, instead of a TypeError a line later, and the type checker knows the value is there afterwards.
import assert from 'node:assert/strict';

/**
 * @template T
 * @param {T | undefined | null} value
 * @param {string} what  named in the failure
 * @returns {T}
 */
export function must(value, what) {
  assert.ok(value !== undefined && value !== null, `missing ${what}`);
  return value;
}
