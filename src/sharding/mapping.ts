// TensorRT-LLM's Mapping (tensorrt_llm/mapping.py, class Mapping) for the two axes tprun has: tensor
// parallelism (tp) and pipeline parallelism (pp). Context parallelism and MoE are not modelled (cp = 1).
//
// Rules taken from that file:
//   - world_size must equal tp_size * pp_size (Mapping.__init__, "world_size must equal to tp_size * pp_size * cp_size")
//   - tp_rank = rank % tp_size; pp_rank = rank // tp_size (properties tp_rank / pp_rank with cp_size 1)
//   - tp groups are consecutive ranks [p*tp, (p+1)*tp); pp groups are strided [t, t+tp, t+2tp, ...] ("init tp group" / "init pp group")
//   - prev_pp_rank / next_pp_rank = rank ∓ tp_size, wrapping around the world (so the last stage's next is the first)
//   - pp_layers(num_layers) = torch.tensor_split(arange(num_layers), pp_size)[pp_rank]: contiguous runs, the
//     first num_layers % pp_size stages one layer longer; pp_size > num_layers is refused ("pp size cannot be
//     larger than num_hidden_layers").
// And from the LLaMA checkpoint converter (tensorrt_llm/models/llama/convert.py, load_weights_from_hf_model):
//   - a rank file names its layers with LOCAL indices: `transformer.layers.{l - layers_range[0]}.`
//   - `transformer.vocab_embedding.weight` only on the first pp rank (is_first_pp_rank), `lm_head.weight` and
//     `transformer.ln_f.weight` only on the last (is_last_pp_rank).
import { InputError } from '../core/errors.js';

export interface MappingShape {
  world_size: number;
  tp_size: number;
  pp_size: number;
}

/** Checks a mapping against a model of `numLayers` layers; one-line InputErrors naming the option. */
export function checkMapping(m: MappingShape, numLayers?: number): void {
  for (const [k, v] of [['tp', m.tp_size], ['pp', m.pp_size]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new InputError(`--${k} ${v}: must be a positive integer`);
  }
  if (m.world_size !== m.tp_size * m.pp_size) {
    throw new InputError(`mapping: world_size ${m.world_size} != tp_size ${m.tp_size} × pp_size ${m.pp_size}`);
  }
  if (numLayers !== undefined && m.pp_size > numLayers) {
    throw new InputError(`--pp ${m.pp_size}: more pipeline stages than the model's ${numLayers} layers (TensorRT-LLM's Mapping.pp_layers needs pp_size ≤ num_hidden_layers)`);
  }
}

/** Layers [first, first + count) of stage `ppRank` (torch.tensor_split semantics). */
export function ppLayerRange(numLayers: number, ppSize: number, ppRank: number): { first: number; count: number } {
  const base = Math.floor(numLayers / ppSize);
  const extra = numLayers % ppSize;
  const count = base + (ppRank < extra ? 1 : 0);
  const first = ppRank * base + Math.min(ppRank, extra);
  return { first, count };
}

export class Mapping {
  readonly worldSize: number;
  readonly tpSize: number;
  readonly ppSize: number;

  constructor(m: MappingShape, readonly rank: number) {
    checkMapping(m);
    this.worldSize = m.world_size;
    this.tpSize = m.tp_size;
    this.ppSize = m.pp_size;
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.worldSize) throw new InputError(`rank ${rank} is outside world_size ${this.worldSize}`);
  }

  get tpRank(): number { return this.rank % this.tpSize; }
  get ppRank(): number { return Math.floor(this.rank / this.tpSize); }
  isFirstPpRank(): boolean { return this.ppRank === 0; }
  isLastPpRank(): boolean { return this.ppRank === this.ppSize - 1; }
  prevPpRank(): number { return (this.rank - this.tpSize + this.worldSize) % this.worldSize; }
  nextPpRank(): number { return (this.rank + this.tpSize) % this.worldSize; }
  /** The ranks that all-reduce with this one (its stage). */
  tpGroup(): number[] { return Array.from({ length: this.tpSize }, (_, t) => this.ppRank * this.tpSize + t); }

  ppLayers(numLayers: number): number[] {
    checkMapping({ world_size: this.worldSize, tp_size: this.tpSize, pp_size: this.ppSize }, numLayers);
    const { first, count } = ppLayerRange(numLayers, this.ppSize, this.ppRank);
    return Array.from({ length: count }, (_, i) => first + i);
  }
}

const LAYER = /^transformer\.layers\.(\d+)\./;

/** The global tensor name behind a rank file's name (local layer index + the stage's first layer). */
export function globalName(local: string, first: number): string {
  const m = LAYER.exec(local);
  return m ? local.replace(LAYER, `transformer.layers.${first + Number(m[1])}.`) : local;
}

/**
 * Which of a full model's tensors (global names) stage `ppRank` holds, as [local name, global name] in
 * the model's order: its layers renumbered from 0, the embedding on the first stage, the final norm and
 * lm_head on the last.
 */
export function stageTensors(globalNames: readonly string[], numLayers: number, ppSize: number, ppRank: number): [string, string][] {
  const { first, count } = ppLayerRange(numLayers, ppSize, ppRank);
  const out: [string, string][] = [];
  for (const g of globalNames) {
    const m = LAYER.exec(g);
    if (m) {
      const l = Number(m[1]);
      if (l >= first && l < first + count) out.push([g.replace(LAYER, `transformer.layers.${l - first}.`), g]);
    } else if (g.startsWith('transformer.vocab_embedding.')) {
      if (ppRank === 0) out.push([g, g]);
    } else if (g.startsWith('transformer.ln_f.') || g.startsWith('lm_head.')) {
      if (ppRank === ppSize - 1) out.push([g, g]);
    } else {
      out.push([g, g]);
    }
  }
  return out;
}
