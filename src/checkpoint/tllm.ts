// TensorRT-LLM checkpoint directories: config.json + rank{r}.safetensors. Writing is atomic per
// directory (callers write into a temporary sibling and rename), reading can present the full model
// (every rank's shards gathered tensor by tensor) so a checkpoint can be resharded to another tp.
import fs from 'node:fs';
import path from 'node:path';
import type { PretrainedConfig } from '../core/config.js';
import type { Tensor } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { PRODUCER, withPath } from './outdir.js';
import { readJson } from './hf-config.js';
import { SafetensorsFile } from './safetensors.js';
import { type TensorMeta, type TensorSource, colsOf } from './source.js';
import { contextFromConfig, type ShardContext } from '../sharding/rules.js';
import { fullShapeOf, gatherTensor } from '../sharding/slice.js';
import { checkMapping, globalName, ppLayerRange } from '../sharding/mapping.js';
import { z } from 'zod/v3'; // ~10 modules, not the v4 root's ~95: every convert rank parses a config (see rank/wire-schema.ts)
import { QUANT_CONFIG_FIELDS, TLLM_KV_ALGOS, TLLM_QUANT_ALGOS, layoutProblem } from '../sharding/tllm-layout.js';

const TllmConfig = z.object({
  architecture: z.string(),
  dtype: z.enum(['float32', 'float16', 'bfloat16']),
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().optional(),
  head_size: z.number().int().positive().optional(),
  intermediate_size: z.number().int().positive(),
  max_position_embeddings: z.number().int().positive(),
  hidden_act: z.string().default('silu'),
  position_embedding_type: z.string().default('rope_gpt_neox'),
  rotary_base: z.number().positive().default(10000),
  rotary_scaling: z.any().nullish(),
  norm_epsilon: z.number().positive().default(1e-5),
  use_parallel_embedding: z.boolean().default(false),
  embedding_sharding_dim: z.union([z.literal(0), z.literal(1)]).default(0),
  mapping: z.object({
    world_size: z.number().int().positive(),
    tp_size: z.number().int().positive(),
    pp_size: z.number().int().positive().default(1),
  }).passthrough(),
  quantization: z.object({
    quant_algo: z.string().nullish(),
    kv_cache_quant_algo: z.string().nullish(),
  }).passthrough().default({ quant_algo: null, kv_cache_quant_algo: null }),
}).passthrough();

export function isTllmDir(dir: string): boolean {
  const c = path.join(dir, 'config.json');
  if (!fs.existsSync(c) || !fs.existsSync(path.join(dir, 'rank0.safetensors'))) return false;
  try { return typeof (JSON.parse(fs.readFileSync(c, 'utf8')) as any).architecture === 'string'; } catch { return false; }
}

export function readTllmConfig(dir: string): PretrainedConfig {
  const file = path.join(dir, 'config.json');
  const p = TllmConfig.safeParse(readJson(file));
  if (!p.success) {
    const i = p.error.issues[0];
    throw new InputError(`${file}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const { producer: _marker, ...c } = p.data; // the directory's marker, not part of the model
  if (c.architecture !== 'LlamaForCausalLM') throw new InputError(`${file}: unsupported architecture ${c.architecture}`);
  const qa = c.quantization.quant_algo, kva = c.quantization.kv_cache_quant_algo;
  if (qa && !(TLLM_QUANT_ALGOS as readonly string[]).includes(qa)) {
    throw new InputError(`${file}: quantization.quant_algo ${qa} is not one tprun runs (it runs ${TLLM_QUANT_ALGOS.join(', ')})`);
  }
  if (kva && !(TLLM_KV_ALGOS as readonly string[]).includes(kva)) {
    throw new InputError(`${file}: quantization.kv_cache_quant_algo ${kva} is not one tprun runs (it runs ${TLLM_KV_ALGOS.join(', ')})`);
  }
  const out = {
    ...c,
    num_key_value_heads: c.num_key_value_heads ?? c.num_attention_heads,
    head_size: c.head_size ?? c.hidden_size / c.num_attention_heads,
    rotary_scaling: c.rotary_scaling ?? null,
    quantization: { ...c.quantization, quant_algo: c.quantization.quant_algo ?? null, kv_cache_quant_algo: c.quantization.kv_cache_quant_algo ?? null },
  } as PretrainedConfig;
  return out;
}

export function rankFile(dir: string, rank: number): string {
  return path.join(dir, `rank${rank}.safetensors`);
}

export function writeConfig(dir: string, config: PretrainedConfig): void {
  fs.mkdirSync(dir, { recursive: true });
  // "producer" marks the directory as tprun's, so a later --out may replace it (outdir.ts). TensorRT-LLM's
  // PretrainedConfig keeps unknown top-level keys as plain attributes, so its loader is unaffected; but it
  // builds QuantConfig(**quantization): a key it does not know there is a TypeError.
  const quantization = Object.fromEntries(Object.entries(config.quantization ?? {}).filter(([k]) => QUANT_CONFIG_FIELDS.has(k)));
  const file = path.join(dir, 'config.json');
  try {
    fs.writeFileSync(file, JSON.stringify({ ...config, quantization, producer: PRODUCER }, null, 2) + '\n');
  } catch (e) {
    throw withPath(e, file);
  }
}

/**
 * The full model of a TensorRT-LLM checkpoint: each tensor is gathered from all ranks' files when first
 * read (one tensor cached), so peak memory is one full tensor plus its shards.
 */
export class TllmSource implements TensorSource {
  readonly config: PretrainedConfig;
  private ctx: ShardContext;
  private files: SafetensorsFile[] = [];
  private cache: { name: string; t: Tensor } | undefined;
  private metas = new Map<string, TensorMeta>();

  /** Global tensor name -> [pp stage, name inside that stage's rank files]. */
  private homes = new Map<string, [number, string]>();

  constructor(readonly where: string) {
    this.config = readTllmConfig(where);
    this.ctx = contextFromConfig(this.config);
    const { tp_size: tp, pp_size: pp, world_size: world } = this.config.mapping;
    checkMapping(this.config.mapping, this.config.num_hidden_layers);
    try {
      for (let r = 0; r < world; r++) this.files.push(SafetensorsFile.open(rankFile(where, r)));
      // Rank r = pp_rank * tp + tp_rank (TensorRT-LLM's Mapping); the tp ranks of one stage hold the same
      // names, with that stage's layers numbered from 0 (see sharding/mapping.ts).
      for (let p = 0; p < pp; p++) {
        const first = this.files[p * tp];
        const names0 = [...first.tensors.keys()];
        for (let r = p * tp + 1; r < (p + 1) * tp; r++) {
          const f = this.files[r];
          for (const n of names0) if (!f.tensors.has(n)) throw new InputError(`${f.file}: missing tensor ${n}`);
          if (f.tensors.size !== names0.length) {
            const extra = [...f.tensors.keys()].find((n) => !first.tensors.has(n));
            throw new InputError(`${f.file}: unexpected tensor ${extra}`);
          }
        }
        const { first: l0 } = ppLayerRange(this.config.num_hidden_layers, pp, p);
        for (const n of names0) {
          const g = globalName(n, l0);
          if (this.homes.has(g)) throw new InputError(`${first.file}: tensor ${n} (${g}) is also in rank${this.homes.get(g)![0] * tp}.safetensors: written for another pp_size than config.json's ${pp}`);
          this.homes.set(g, [p, n]);
          // Full shapes come from gathering shapes only; no data is read here.
          const i = first.info(n);
          this.metas.set(g, { dtype: i.dtype, shape: fullShapeOf(n, i.shape, this.ctx) });
        }
      }
      const bad = layoutProblem(this.config, (n) => this.metas.get(n));
      if (bad) throw new InputError(`${where}: ${bad}`);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  names(): string[] { return [...this.metas.keys()]; }
  has(name: string): boolean { return this.metas.has(name); }
  info(name: string): TensorMeta {
    const m = this.metas.get(name);
    if (!m) throw new InputError(`${this.where}: missing tensor ${name}`);
    return m;
  }
  private full(name: string): Tensor {
    if (this.cache?.name === name) return this.cache.t;
    this.cache = undefined;
    const [p, local] = this.homes.get(name) ?? [0, name];
    const tp = this.config.mapping.tp_size;
    const t = gatherTensor(name, this.files.slice(p * tp, (p + 1) * tp).map((f) => f.read(local)), this.ctx);
    this.cache = { name, t };
    return t;
  }
  readRows(name: string, start: number, end: number, dest: Uint8Array, destOff: number): void {
    const t = this.full(name);
    const rb = t.data.length / Math.max(1, t.shape.length ? t.shape[0] : 1);
    dest.set(t.data.subarray(start * rb, end * rb), destOff);
  }
  readCols(name: string, start: number, end: number, rows?: readonly [number, number]): Uint8Array { return colsOf(this.full(name), start, end, rows); }
  close(): void { for (const f of this.files) f.close(); this.files = []; this.cache = undefined; }
}
