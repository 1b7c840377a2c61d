// The communicators of a pipeline: each stage's tensor-parallel group is a group of the world
// (World.newGroup), and the hand-offs between stages are world point-to-point messages on TAG_PIPE.

import type { Group, World } from '../rank/types.js';
import type { Mapping } from '../sharding/mapping.js';

/** Tags of the pipeline hand-offs (below the world's reserved object tags). */
export const TAG_PIPE = 0x7100;

/**
 * This rank's stage group: the tp ranks of its stage, in tp order (TensorRT-LLM's Mapping.tp_group,
 * tensorrt_llm/mapping.py). Every rank creates every stage's group, in stage order, because a world's
 * ranks must call newGroup alike (as torch.distributed.new_group requires).
 */
export function stageGroup(world: World, mapping: Mapping): Group {
  let mine: Group | undefined;
  for (let s = 0; s < mapping.ppSize; s++) {
    const g = world.newGroup(Array.from({ length: mapping.tpSize }, (_, t) => s * mapping.tpSize + t));
    if (s === mapping.ppRank) mine = g;
  }
  return mine!;
}
