// Hugging Face LLaMA directories: config.json + model.safetensors or shards listed by
// model.safetensors.index.json. Presents TensorRT-LLM's full tensors through a StackedSource.
import fs from 'node:fs';
import path from 'node:path';
import type { Mapping, PretrainedConfig } from '../core/config.js';
import { InputError } from '../core/errors.js';
import { SafetensorsFile } from './safetensors.js';
import { type FloatDType, pretrainedFromHf, readJson } from './hf-config.js';
import { type Part, StackedSource, type TensorMeta, type TensorSource } from './source.js';
import { FLOAT_DTYPES } from '../core/dtype.js';
import type { RawRange } from './ranged.js';


/** HF tensor names across one or more safetensors files. */
export class SafetensorsSource implements TensorSource {
  private owner = new Map<string, SafetensorsFile>();
  private files: SafetensorsFile[] = [];

  /** `byName` maps tensor name -> file (from the index); when absent, every tensor of every file. */
  constructor(readonly where: string, files: string[], byName?: Record<string, string>) {
    try {
      const opened = new Map<string, SafetensorsFile>();
      for (const f of files) {
        const sf = SafetensorsFile.open(f);
        opened.set(f, sf);
        this.files.push(sf);
      }
      if (byName) {
        for (const [name, f] of Object.entries(byName)) {
          const sf = opened.get(f)!;
          if (!sf.tensors.has(name)) throw new InputError(`${f}: missing tensor ${name} (listed in the index)`);
          this.owner.set(name, sf);
        }
      } else {
        for (const sf of this.files) {
          for (const name of sf.tensors.keys()) {
            const prev = this.owner.get(name);
            if (prev) throw new InputError(`${sf.file}: tensor ${name} also in ${prev.file}`);
            this.owner.set(name, sf);
          }
        }
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private file(name: string): SafetensorsFile {
    const f = this.owner.get(name);
    if (!f) throw new InputError(`${this.where}: missing tensor ${name}`);
    return f;
  }
  names(): string[] { return [...this.owner.keys()]; }
  has(name: string): boolean { return this.owner.has(name); }
  info(name: string): TensorMeta { const t = this.file(name).info(name); return { dtype: t.dtype, shape: t.shape }; }
  fileOf(name: string): string { return this.file(name).file; }
  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    this.file(name).readRows(name, start, end, dest, destOff);
  }
  readCols(name: string, start: number, end: number, rows?: readonly [number, number], dest?: Uint8Array): Uint8Array { return this.file(name).readCols(name, start, end, rows, dest); }
  fileRows(name: string, start: number, end: number): RawRange[] { return this.file(name).fileRows(name, start, end); }
  close(): void { for (const f of this.files) f.close(); this.files = []; }
}

export function isHfDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'config.json')) &&
    (fs.existsSync(path.join(dir, 'model.safetensors')) || fs.existsSync(path.join(dir, 'model.safetensors.index.json')));
}

export function checkDir(dir: string, what = '--model'): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new InputError(`${what} ${dir}: no such directory`);
  }
  if (!st.isDirectory()) throw new InputError(`${what} ${dir}: not a directory`);
}

export function readHfConfig(dir: string, opts: { dtype?: FloatDType; mapping: Mapping }): PretrainedConfig {
  const file = path.join(dir, 'config.json');
  return pretrainedFromHf(readJson(file), file, opts);
}

/** Raw HF tensors of a directory (single file or index). */
export function openHfTensors(dir: string): SafetensorsSource {
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) {
    const j = readJson(index) as { weight_map?: Record<string, string> };
    if (!j || typeof j !== 'object' || typeof j.weight_map !== 'object' || j.weight_map === null) {
      throw new InputError(`${index}: no weight_map`);
    }
    const byName: Record<string, string> = {};
    for (const [n, f] of Object.entries(j.weight_map)) {
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\')) throw new InputError(`${index}: bad file for ${n}`);
      byName[n] = path.join(dir, f);
    }
    const files = [...new Set(Object.values(byName))].sort();
    return new SafetensorsSource(dir, files, byName);
  }
  const single = path.join(dir, 'model.safetensors');
  if (!fs.existsSync(single)) throw new InputError(`${dir}: no model.safetensors or model.safetensors.index.json`);
  return new SafetensorsSource(dir, [single]);
}

/** HF name(s) of each TensorRT-LLM tensor (stacked along dim 0 when several). */
export function hfPartsOf(name: string, tied: boolean, hasLmHead: boolean): string[] {
  if (name === 'transformer.vocab_embedding.weight') return ['model.embed_tokens.weight'];
  if (name === 'transformer.ln_f.weight') return ['model.norm.weight'];
  if (name === 'lm_head.weight') return [tied || !hasLmHead ? 'model.embed_tokens.weight' : 'lm_head.weight'];
  const m = /^transformer\.layers\.(\d+)\.(.+)$/.exec(name);
  if (!m) throw new Error(`no HF name for ${name}`);
  const p = `model.layers.${m[1]}`;
  switch (m[2]) {
    case 'input_layernorm.weight': return [`${p}.input_layernorm.weight`];
    case 'post_layernorm.weight': return [`${p}.post_attention_layernorm.weight`];
    case 'attention.qkv.weight': return ['q', 'k', 'v'].map((x) => `${p}.self_attn.${x}_proj.weight`);
    case 'attention.dense.weight': return [`${p}.self_attn.o_proj.weight`];
    case 'mlp.fc.weight': return [`${p}.mlp.gate_proj.weight`];
    case 'mlp.gate.weight': return [`${p}.mlp.up_proj.weight`];
    case 'mlp.proj.weight': return [`${p}.mlp.down_proj.weight`];
  }
  throw new Error(`no HF name for ${name}`);
}

/** Expected shape of an HF LLaMA tensor. */
export function hfExpectedShape(hfName: string, c: PretrainedConfig): number[] {
  const h = c.hidden_size;
  const qd = c.num_attention_heads * c.head_size;
  const kvd = c.num_key_value_heads * c.head_size;
  if (/embed_tokens|lm_head/.test(hfName)) return [c.vocab_size, h];
  if (/layernorm|model\.norm/.test(hfName)) return [h];
  if (/q_proj/.test(hfName)) return [qd, h];
  if (/[kv]_proj/.test(hfName)) return [kvd, h];
  if (/o_proj/.test(hfName)) return [h, qd];
  if (/(gate|up)_proj/.test(hfName)) return [c.intermediate_size, h];
  if (/down_proj/.test(hfName)) return [h, c.intermediate_size];
  throw new Error(`unexpected HF tensor ${hfName}`);
}

/**
 * TensorRT-LLM full tensors over a source with HF names (HF safetensors, or Meta presented as HF).
 * Checks every part's shape and dtype against the config so a wrong file fails before any output.
 */
export function tllmViewOfHf(src: TensorSource & { fileOf?(n: string): string }, config: PretrainedConfig, names: string[]): StackedSource {
  const parts = new Map<string, Part[]>();
  const hasLmHead = src.has('lm_head.weight');
  for (const name of names) {
    const ps: Part[] = [];
    for (const hf of hfPartsOf(name, !!config.tie_word_embeddings, hasLmHead)) {
      if (!src.has(hf)) throw new InputError(`${src.where}: missing tensor ${hf}`);
      const m = src.info(hf);
      const where = `${src.fileOf?.(hf) ?? src.where}: tensor ${hf}`;
      const want = hfExpectedShape(hf, config);
      if (m.shape.join() !== want.join()) {
        throw new InputError(`${where}: shape [${m.shape.join(', ')}] disagrees with config.json (expected [${want.join(', ')}])`);
      }
      if (!FLOAT_DTYPES.has(m.dtype)) throw new InputError(`${where}: dtype ${m.dtype} is not a float type`);
      ps.push({ src, name: hf });
    }
    parts.set(name, ps);
  }
  return new StackedSource(src.where, parts);
}
