// Shared by the engine tests: the reference file and the numbers the issue asks for.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const MODEL = fileURLToPath(new URL('../../models/brown-llama-a', import.meta.url));
export const HELDOUT = fileURLToPath(new URL('../../data/brown-heldout.txt', import.meta.url));
export const REF = JSON.parse(readFileSync(new URL('../../models/brown-llama-a-reference.json', import.meta.url), 'utf8'));

export function relL2(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function relDiff(a, b) {
  return Math.abs(a - b) / Math.abs(b);
}
