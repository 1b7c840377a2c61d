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
  // One stage holding every rank: its group is the world itself, whose allReduce has the same-machine
  // shared-memory path (src/rank/shm-allreduce.ts) that groups of the world do not.
  if (mapping.ppSize === 1 && mapping.tpSize === world.size) return worldGroup(world);
  let mine: Group | undefined;
  for (let s = 0; s < mapping.ppSize; s++) {
    const g = world.newGroup(Array.from({ length: mapping.tpSize }, (_, t) => s * mapping.tpSize + t));
    if (s === mapping.ppRank) mine = g;
  }
  return mine!;
}

/** The world as a group of all its ranks in world order (the same calls, the same communicator). */
function worldGroup(w: World): Group {
  return {
    rank: w.rank, size: w.size, ranks: Array.from({ length: w.size }, (_, r) => r),
    barrier: w.barrier.bind(w), broadcast: w.broadcast.bind(w), allReduce: w.allReduce.bind(w), allGather: w.allGather.bind(w),
    gather: w.gather.bind(w), scatter: w.scatter.bind(w), reduceScatter: w.reduceScatter.bind(w), broadcastObject: w.broadcastObject.bind(w),
  };
}
