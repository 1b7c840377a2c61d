// The collectives of one pipeline stage's tensor-parallel group, built on the world's send/recv (the
// world has no sub-communicators). With pp = 1 the group is the world and its own collectives are used.
// Every member adds the contributions in group order, so all hold bit-identical sums, as the world does.
// Receives carry the world's timeout, and a dead peer fails them as it fails any collective.

import type { World } from '../rank/types.js';
import { Mapping } from '../sharding/mapping.js';

/** Tags of the stage group and of the pipeline hand-offs (below the world's reserved object tags). */
export const TAG_TP = 0x7000;
export const TAG_PIPE = 0x7100;

export class TpGroup {
  readonly ranks: number[];
  readonly whole: boolean;

  constructor(readonly world: World, readonly mapping: Mapping) {
    this.ranks = mapping.tpGroup();
    this.whole = this.ranks.length === world.size;
  }

  get size(): number { return this.ranks.length; }

  /** In place: the elementwise sum over the group. */
  async allReduceSum(buf: Float32Array): Promise<Float32Array> {
    if (this.size === 1) return buf;
    if (this.whole) return this.world.allReduce(buf, 'sum');
    const parts = await this.exchange(buf);
    // Our own part is `buf` itself: keep a copy before `buf` becomes the sum.
    const me = this.ranks.indexOf(this.world.rank);
    parts[me] = buf.slice();
    buf.set(parts[0]);
    for (let i = 1; i < parts.length; i++) {
      const p = parts[i];
      for (let j = 0; j < buf.length; j++) buf[j] += p[j];
    }
    return buf;
  }

  /** Member i's piece at offset i * buf.length. */
  async allGather(buf: Float32Array): Promise<Float32Array> {
    if (this.size === 1) return buf;
    if (this.whole) return this.world.allGather(buf);
    const parts = await this.exchange(buf);
    const out = new Float32Array(buf.length * parts.length);
    parts.forEach((p, i) => out.set(p, i * buf.length));
    return out;
  }

  /** Every member's buffer, in group order (its own included, not copied). */
  private async exchange(buf: Float32Array): Promise<Float32Array[]> {
    const me = this.world.rank;
    const ops: Promise<unknown>[] = [];
    const parts = this.ranks.map((r) => {
      if (r === me) return buf;
      const into = new Float32Array(buf.length);
      ops.push(this.world.send(buf, r, TAG_TP), this.world.recv(r, TAG_TP, into));
      return into;
    });
    await Promise.all(ops);
    return parts;
  }
}
