import { Ctx, refreshMaps, skip, tick } from "../../base/context";
import { rdU64 } from "../../safe/mem";
import { HeapRegion, KIND_MAIN, forEachInUseChunk } from "../heap/walk";
import { PoolOffsets, looksLikePoolHead } from "../../nginx/pool-walk";
import { FoundPool, discoverPools } from "./discover";
import { BT, RangeIndex, betweenTick } from "./range-index";
import { slicedOrder } from "../../base/sort";
import { noJit } from "../../base/nojit";
import { PassState, RG, RootState, addEdgeS, poolRanges, scanPoolRange, setPhase } from "./pass";
import type { OwnerInputs } from "./owners";


/** words pointing at unknown heap memory followed per round, rounds, and pools found late, at most */
const MAX_LATE_TARGETS = 4096;
const MAX_LATE_POOLS = 1024;
/** each round that goes on adds a pool */
const MAX_LATE_ROUNDS = MAX_LATE_POOLS;
/** pool-head-looking chunks no known pool owns, remembered from the one heap walk */
const MAX_LATE_HEADS = 65536;

export interface LateResult {
  /** node id of late pool j (pools[nPools + j]) */
  nodeOf: number[];
  isPool: LuaTable<number, boolean>;
}

/**
 * Late discovery's working state at module level, and its helpers module-level functions:
 * closures made per scan get traces that guard on their identity, so every scan compiled
 * the same loops again (several traces in a row, inside one slice).
 */
interface LateState {
  ctx: Ctx;
  ix: RangeIndex;
  known: RangeIndex;
  othersIx: RangeIndex;
  nPools: number;
  /** targets: the word's value, where it is, and who holds it (> 0: a late pool's node; < 0: data segment -src-1; 0: cycle pool block tFloor) */
  tWord: number[];
  tAt: number[];
  tSrc: number[];
  tFloor: number[];
  /** words read since the last budget check, across collect() calls */
  words: number;
  poolChunk: LuaTable<number, boolean>;
  P: PoolOffsets;
  pagesize: number;
  hs: number[];
  he: number[];
}
let LS: LateState | undefined;

/** the brk heap as the current mappings show it, then the other regions */
function currentRegions(ctx: Ctx, others: HeapRegion[]): HeapRegion[] {
  const out: HeapRegion[] = [];
  const list = ctx.maps.list;
  let i = 0;
  while (i < list.length) {
    const m = list[i];
    i++;
    if (m.path !== "[heap]" || !m.readable) continue;
    let end = m.end;
    while (i < list.length && list[i].path === "[heap]" && list[i].start === end && list[i].readable) end = list[i++].end;
    out.push({ kind: KIND_MAIN, start: m.start, first: m.start, end });
  }
  for (const r of others) out.push(r);
  return out;
}

function addKnown(p: FoundPool, node: number, to: RangeIndex): void {
  for (const b of p.mem.blocks) to.add(b, b + p.st.create_size, node);
  for (let j = 0; j < p.mem.larges.length; j++) to.add(p.mem.larges[j], p.mem.larges[j] + p.mem.largeSizes[j], node);
}

/** heap memory as it is now: the brk heap up to the current break, the other regions as the owner pass saw them */
function inHeap(L: LateState, w: number): boolean {
  const [bs, be] = L.ctx.maps.brkHeap();
  if (w >= bs && w < be) return true;
  return L.othersIx.lookup(w) !== 0;
}

/** words of [s, e) pointing at heap memory no known pool covers (or at a plain chunk node) → targets */
function collect(s: number, e: number, src: number, floor: number): void {
  const L = LS!;
  const ctx = L.ctx;
  if (e <= s) return;
  if (!ctx.maps.readable(s, e - s)) {
    skip(ctx, "late_range_unreadable");
    return;
  }
  const ix = L.ix;
  const known = L.known;
  const nPools = L.nPools;
  let a = s + ((8 - (s % 8)) % 8);
  while (a + 8 <= e) {
    const w = rdU64(a);
    // a word into a plain chunk node is followed too: the chunk may have been freed and
    // reused as a new pool's first block since the chunk pass read it (its edges are stale)
    const hit = w >= 65536 ? ix.lookup(w) : -1;
    if ((hit === 0 || hit > nPools) && known.lookup(w) === 0 && inHeap(L, w)) {
      if (L.tWord.length >= MAX_LATE_TARGETS) {
        skip(ctx, "late_targets_limit");
        return;
      }
      L.tWord.push(w);
      L.tAt.push(a);
      L.tSrc.push(src);
      L.tFloor.push(floor);
    }
    a += 8;
    L.words++;
    // a pointer-looking word costs three index lookups: check the budget every 512 words (not
    // more often: the ranges are data segments, outside the brk heap, so the first read after a
    // yield re-reads /proc/self/maps, ~50-100 us)
    if (L.words % 512 === 0 && tick(ctx)) {
      if (a < e && !ctx.maps.readable(a, e - a)) {
        skip(ctx, "late_range_unmapped");
        return;
      }
    }
  }
}

/** in-use chunks no known pool owns that look like a pool head → L.hs/L.he */
function lateHead(this: void, user: number, usable: number): void {
  const L = LS!;
  if (L.poolChunk.get(user)) return;
  if (L.hs.length >= MAX_LATE_HEADS) return;
  if (looksLikePoolHead(L.ctx, L.P, user, L.pagesize)) {
    L.hs.push(user);
    L.he.push(user + usable);
  }
}

/**
 * Pools created while the (sliced) scan ran, after the heap walk, were never
 * discovered; a root that now points at one (the .bss head of a list that just got a
 * new element) would cut the chain and leave every older pool "unreferenced". So the
 * roots nginx and the modules own (data segments, the cycle pool) are read again for
 * words pointing at heap memory that no known pool covers (or at a plain chunk node,
 * which may have been freed and reused since the chunk pass); one more heap walk lists
 * the in-use chunks that look like pool heads (looksLikePoolHead), those holding a
 * target get the full discovery checks, rooted ones (connections/requests opened
 * meanwhile) are left out, and each pool found is added as a node with its own
 * references and a root edge. Further rounds follow chains of new pools (several
 * updates during one scan). Bounded by MAX_LATE_*; every read validated; sliced.
 */
export function lateDiscovery(ctx: Ctx, inp: OwnerInputs, st: PassState, R: RootState, nPools: number): LateResult {
  const res = lateRounds(ctx, inp, st, R, nPools);
  LS = undefined;
  return res;
}

function lateRounds(ctx: Ctx, inp: OwnerInputs, st: PassState, R: RootState, nPools: number): LateResult {
  const res: LateResult = { nodeOf: [], isPool: new LuaTable() };
  const LP = inp.late;
  if (LP === undefined) return res;
  setPhase(ctx, "late: known index");
  const pools = inp.pools;
  const ix = st.ix;
  // the heap as it is now: pools created during the scan may lie past the end the
  // earlier passes saw (brk grew). The brk heap is taken from the current mappings
  // (ctx.maps is re-read after every yield, and nothing runs between a yield and the
  // reads that follow it); thread arenas and mmapped chunks as the owner pass saw them.
  refreshMaps(ctx);
  const others: HeapRegion[] = [];
  for (const r of inp.regions) if (r.kind !== KIND_MAIN) others.push(r);
  // every known pool's memory (rooted ones too): pointers there are no news
  const known = new RangeIndex();
  // (no memory is read from here to collect(): yields cannot invalidate anything)
  tick(ctx);
  for (let k = 0; k < nPools; k++) {
    addKnown(pools[k], 1, known);
    if (k % 8 === 7) tick(ctx);
  }
  known.build(ctx);
  // heap memory as it is now: the brk heap up to the current break, the other regions as the owner
  // pass saw them (indexed: a linear search per word cost milliseconds with many mmapped chunks)
  const othersIx = new RangeIndex();
  for (const r of others) othersIx.add(r.first, r.end, 1);
  othersIx.build(ctx);
  const L: LateState = {
    ctx, ix, known, othersIx, nPools, tWord: [], tAt: [], tSrc: [], tFloor: [], words: 0,
    poolChunk: st.poolChunk, P: LP.P, pagesize: LP.pagesize, hs: [], he: [],
  };
  LS = L;
  tick(ctx);

  setPhase(ctx, "late: collect targets");
  for (let i = 0; i < inp.segments.length; i++) collect(inp.segments[i].start, inp.segments[i].end, -(i + 1), 0);
  for (let k = 0; k < nPools; k++) {
    const p = pools[k];
    if (p.rooted !== "cycle") continue;
    const nr = poolRanges(p);
    for (let j = 0; j < nr; j++) {
      const rs = RG.s[j];
      collect(rs, RG.e[j], 0, rs);
    }
  }

  ctx.budget.mark("late: targets read");
  if (L.tWord.length === 0) return res;
  // one walk over the heap as it is now: the in-use chunks no known pool owns that look
  // like a pool head (pools created since the heap walk, mostly). Every pool a target can
  // lead to existed when its word was read, before this walk.
  setPhase(ctx, "late: heads walk");
  refreshMaps(ctx);
  const regions = currentRegions(ctx, others);
  const hs = L.hs;
  const he = L.he;
  forEachInUseChunk(ctx, regions, lateHead);
  ctx.budget.mark("late: heads walked");
  if (hs.length >= MAX_LATE_HEADS) skip(ctx, "late_heads_limit");
  setPhase(ctx, "late: heads sort");
  BT.ctx = ctx;
  const order = slicedOrder(hs, betweenTick);
  BT.ctx = undefined;
  const headStart: number[] = [];
  const headEnd: number[] = [];
  for (let oi = 0; oi < order.length; oi++) {
    const j = order[oi];
    headStart.push(hs[j]);
    headEnd.push(he[j]);
    if (oi % 1024 === 1023) tick(ctx);
  }
  const nH = headStart.length;
  // connections and requests opened during the scan have pools too: those are rooted, not late finds
  ctx.budget.mark("late: heads sorted");
  setPhase(ctx, "late: rooted set");
  const rootedNow = nH > 0 ? LP.rooted() : new LuaTable<number, string>();
  ctx.budget.mark("late: rooted set");

  setPhase(ctx, "late: rounds");
  for (let round = 0; round < MAX_LATE_ROUNDS && L.tWord.length > 0 && nH > 0; round++) {
    tick(ctx);
    // the pool-head chunks that hold a target
    const cands: number[] = [];
    const candSeen = new LuaTable<number, boolean>();
    for (const w of L.tWord) {
      // last head starting at or below w
      let l = 0;
      let h = nH - 1;
      let at = -1;
      while (l <= h) {
        const mid = Math.floor((l + h) / 2);
        if (headStart[mid] <= w) {
          at = mid;
          l = mid + 1;
        } else h = mid - 1;
      }
      if (at < 0 || w >= headEnd[at]) continue;
      const u = headStart[at];
      if (candSeen.get(u) || st.poolChunk.get(u)) continue;
      candSeen.set(u, true);
      if (rootedNow.get(u) !== undefined) {
        skip(ctx, "late_pool_rooted");
        continue;
      }
      cands.push(u);
    }
    if (cands.length === 0) break;
    ctx.budget.mark("late: candidates");
    const found = discoverPools(ctx, LP.P, cands, LP.pagesize, new LuaTable());
    ctx.budget.mark("late: discovered");
    const fresh = new RangeIndex();
    const added: FoundPool[] = [];
    const addedNode: number[] = [];
    for (const fp of found) {
      let clash = false;
      for (const b of fp.mem.blocks) if (st.poolChunk.get(b)) clash = true;
      for (const l of fp.mem.larges) if (st.poolChunk.get(l)) clash = true;
      if (clash) {
        skip(ctx, "late_pool_overlap");
        continue;
      }
      if (res.nodeOf.length >= MAX_LATE_POOLS) {
        skip(ctx, "late_pool_limit");
        break;
      }
      const node = st.nextNode++;
      fp.rooted = undefined;
      pools.push(fp);
      res.nodeOf.push(node);
      res.isPool.set(node, true);
      for (const b of fp.mem.blocks) st.poolChunk.set(b, true);
      for (const l of fp.mem.larges) st.poolChunk.set(l, true);
      addKnown(fp, node, fresh);
      addKnown(fp, 1, known);
      added.push(fp);
      addedNode.push(node);
      // its references to the pools and chunks already indexed
      st.curPool = node;
      const nr = poolRanges(fp);
      for (let j = 0; j < nr; j++) scanPoolRange(RG.s[j], RG.e[j]);
    }
    if (added.length === 0) break;
    fresh.build(ctx);
    known.build(ctx);
    // the words that led here become root hits or edges from other late pools
    const tWord = L.tWord;
    const tAt = L.tAt;
    const tSrc = L.tSrc;
    const tFloor = L.tFloor;
    for (let t = 0; t < tWord.length; t++) {
      const node = fresh.lookup(tWord[t]);
      if (node === 0) continue;
      const src = tSrc[t];
      if (src > 0) {
        addEdgeS(st, src, node);
        continue;
      }
      if (R.seen.get(node)) continue;
      R.seen.set(node, true);
      const at = tAt[t];
      if (src < 0) {
        const seg = inp.segments[-src - 1];
        R.segPathOf.push(seg.path);
        R.segFileOf.push(seg.fileStart ?? seg.start);
        R.floorOf.push(0);
      } else {
        R.segPathOf.push("");
        R.segFileOf.push(0);
        R.floorOf.push(tFloor[t]);
      }
      R.node.push(node);
      R.at.push(at);
      R.kinds.push(src < 0 ? "segment" : "cycle");
    }
    // next round: what the new pools point at
    L.tWord = [];
    L.tAt = [];
    L.tSrc = [];
    L.tFloor = [];
    for (let j = 0; j < added.length; j++) {
      const nd = addedNode[j];
      const nr = poolRanges(added[j]);
      for (let r = 0; r < nr; r++) collect(RG.s[r], RG.e[r], nd, 0);
    }
  }
  return res;
}

noJit(addKnown);
