import { Ctx, tick } from "../../base/context";
import { slicedOrder } from "../../base/sort";

/** the page map's granularity: a lookup binary-searches only the ranges of one 64 KB page */
export const PAGE = 65536;

/** the ctx a sliced build/sort checks the budget of (module level: no closure per call) */
export const BT: { ctx?: Ctx } = {};
export function betweenTick(this: void): void {
  if (BT.ctx !== undefined) tick(BT.ctx);
}

/** Sorted, disjoint [start, end) ranges → node, with a 64 KB page map in front of a binary search. */
export class RangeIndex {
  starts: number[] = [];
  ends: number[] = [];
  nodes: number[] = [];
  n = 0;
  lo = 0;
  hi = 0;
  pageLo = new LuaTable<number, number>();
  pageHi = new LuaTable<number, number>();
  private pending: [number, number, number][] = [];

  add(start: number, end: number, node: number): void {
    if (end > start) this.pending.push([start, end, node]);
  }

  /**
   * Sort and index the ranges added. With a ctx the work is sliced (budget checks
   * between sort runs and every few thousand ranges or pages): the index may hold
   * tens of thousands of ranges. Reads no memory, so a yield cannot hurt it.
   */
  build(ctx?: Ctx): void {
    const p = this.pending;
    BT.ctx = ctx;
    const keys: number[] = [];
    for (let i = 0; i < p.length; i++) keys[i] = p[i][0];
    const order = slicedOrder(keys, betweenTick);
    this.starts = [];
    this.ends = [];
    this.nodes = [];
    this.pageLo = new LuaTable();
    this.pageHi = new LuaTable();
    let n = 0;
    let lastEnd = 0;
    let work = 0;
    for (let oi = 0; oi < order.length; oi++) {
      const [s, e, node] = p[order[oi]];
      // overlapping ranges cannot both be real: keep the first
      if (s < lastEnd) continue;
      this.starts[n] = s;
      this.ends[n] = e;
      this.nodes[n] = node;
      for (let pg = Math.floor(s / PAGE); pg <= Math.floor((e - 1) / PAGE); pg++) {
        if (this.pageLo.get(pg) === undefined) this.pageLo.set(pg, n);
        this.pageHi.set(pg, n);
        if (++work % 512 === 0) betweenTick();
      }
      lastEnd = e;
      n++;
      if (++work % 512 === 0) betweenTick();
    }
    BT.ctx = undefined;
    this.n = n;
    this.lo = n > 0 ? this.starts[0] : 0;
    this.hi = n > 0 ? this.ends[n - 1] : 0;
  }

  /** node whose range contains w, or 0 */
  lookup(w: number): number {
    if (w < this.lo || w >= this.hi) return 0;
    const pg = Math.floor(w / PAGE);
    let l = this.pageLo.get(pg);
    if (l === undefined) return 0;
    let h = this.pageHi.get(pg)!;
    const starts = this.starts;
    while (l <= h) {
      const mid = Math.floor((l + h) / 2);
      if (starts[mid] <= w) {
        if (w < this.ends[mid]) return this.nodes[mid];
        l = mid + 1;
      } else h = mid - 1;
    }
    return 0;
  }
}
