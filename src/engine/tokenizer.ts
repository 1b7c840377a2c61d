// The model's own tokenizer (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers.
// Engines carry a copy of these files so that generate needs nothing but the engine directory.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import type { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { InputError } from '../core/errors.js';

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'];

export interface TextTokenizer {
  /** Ids as the tokenizer's template says (BOS included when the template adds it). */
  encode(text: string, opts?: { special?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecial?: boolean }): string;
}

export function hasTokenizer(dir: string): boolean {
  return existsSync(join(dir, 'tokenizer.json'));
}

export function loadTokenizer(dir: string): TextTokenizer {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw new InputError(`${file}: no tokenizer (pass --tokenizer DIR or use --input-ids)`);
  let tok: HfTokenizer;
  try {
    const cfgFile = join(dir, 'tokenizer_config.json');
    const cfg = existsSync(cfgFile) ? JSON.parse(readFileSync(cfgFile, 'utf8')) : {};
    // Loaded on first use: every tprun start (the launcher included) would otherwise pay for it.
    const { Tokenizer } = createRequire(import.meta.url)('@huggingface/tokenizers') as typeof import('@huggingface/tokenizers');
    tok = new Tokenizer(JSON.parse(readFileSync(file, 'utf8')), cfg);
  } catch (e) {
    throw new InputError(`${file}: cannot load the tokenizer (${(e as Error).message})`);
  }
  return {
    encode: (text, o = {}) => tok.encode(text, { add_special_tokens: o.special ?? true }).ids,
    decode: (ids, o = {}) => tok.decode(ids, { skip_special_tokens: o.skipSpecial ?? false }),
  };
}

/** The tokenizer files of a model directory, to be stored with an engine. */
export function tokenizerFiles(dir: string): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const f of TOKENIZER_FILES) if (existsSync(join(dir, f))) out[f] = readFileSync(join(dir, f));
  return out;
}
