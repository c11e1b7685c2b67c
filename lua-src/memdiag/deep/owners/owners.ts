import { Ctx, skip, tick } from "../../base/context";
import { HeapRegion, forEachInUseChunk } from "../heap/walk";
import { copyUnavailable, copyWindow } from "../heap/copy";
import { FoundPool } from "./discover";
import { PoolOffsets } from "../../nginx/pool-walk";
import { ConfStart, SegmentRoot } from "./roots";
import { newHash } from "../../base/sort";
import { RangeIndex } from "./range-index";
import { scanRangeCopied } from "./ref-scan";
import {
  RG, ROOTED_KINDS, ROOTED_KIND_NAMES, RootState, beginPass, newPassState, poolRanges, rootHit, rootName, scanPoolRange, scanRoot, setPhase, visitChunk,
} from "./pass";
import { LateResult, lateDiscovery } from "./late";
import { searchOwners } from "./search";
import { noJit } from "../../base/nojit";

/**
 * Owner attribution by conservative reachability, like the mark phase of a
 * conservative GC. Nodes are the unrooted pools and the plain heap chunks that
 * hold a pointer into one; any 8-aligned word pointing into a node's memory
 * (interior pointers included) is a reference. Named roots (data segments,
 * module confs inside the cycle pool, connection/request pools, LuaJIT memory)
 * are scanned last; a BFS from the roots, tier by tier (nginx and module data, then
 * connection/request pools, then Lua), gives every pool its
 * owner (the root at the head of its chain) and the shortest retainer path.
 *
 * Scan order, each range read once:
 *  1. every in-use heap chunk that is not pool memory → chunk→pool edges
 *  2. the unrooted pools' memory → pool→pool and pool→chunk edges
 *  3. the roots → root→pool and root→chunk edges
 * so chains root → pool* → chunk → pool are found; chunk → chunk chains are not.
 */

export interface OwnerInputs {
  pools: FoundPool[];
  regions: HeapRegion[];
  segments: SegmentRoot[];
  lua: SegmentRoot[];
  confs: ConfStart[];
  cycleLog: number;
  /**
   * pool layout, page size and the rooted pools as they are now (cycle, connection and
   * request pools): enables late discovery of pools created while the scan ran
   */
  late?: { P: PoolOffsets; pagesize: number; rooted: (this: void) => LuaTable<number, string> };
}

export interface OwnerResult {
  /** per pool index (unrooted pools only, in `pools` order): owner name, retainer path */
  owner: LuaTable<number, string>;
  /** hops from the root to the pool (a group reports the retainer path of its shortest) */
  depth: LuaTable<number, number>;
  /** the retainer path of pool k ("root → pool → …"), made on demand */
  retainerOf: (this: void, k: number) => string;
  /** address of the root word that starts the retainer path */
  rootRef: LuaTable<number, number>;
  /**
   * per pool index: other roots (same tier) that point at this pool while a root holding
   * the head of its chain owns it, with how many pools each reaches (stale words, or a
   * second holder): reported, not used for ownership
   */
  alt: LuaTable<number, { owner: string; at: number; pools: number }[]>;
  heapBytes: number;
  refBytes: number;
}

// helpers of attributeOwners at module level: a closure made per scan and called in a loop
// gets traces that guard on its identity, and every scan compiled the loop's traces again
function nodeOfPool(this: void, k: number, nPools: number, late: LateResult): number {
  return k < nPools ? k + 1 : late.nodeOf[k - nPools];
}

export function attributeOwners(ctx: Ctx, inp: OwnerInputs, trace?: (this: void, what: string) => void): OwnerResult {
  const pools = inp.pools;
  // node ids: unrooted pool k (0-based in `pools`) → k + 1; heap chunks after
  const nPools = pools.length;
  const ix = new RangeIndex();
  /** user pointers of every pool's chunks (rooted too): skipped by the plain-chunk pass */
  let nChunks = 0;
  for (let k = 0; k < nPools; k++) nChunks += pools[k].mem.blocks.length + pools[k].mem.larges.length;
  const poolChunk = newHash<number, boolean>(nChunks);
  let work = 0;
  for (let k = 0; k < nPools; k++) {
    const p = pools[k];
    for (const b of p.mem.blocks) poolChunk.set(b, true);
    for (const l of p.mem.larges) poolChunk.set(l, true);
    if (p.rooted === undefined) {
      const nr = poolRanges(p);
      for (let j = 0; j < nr; j++) ix.add(RG.s[j], RG.e[j], k + 1);
    }
    // no memory is read here: a yield cannot invalidate anything
    work += 1 + p.mem.blocks.length + p.mem.larges.length;
    if (work >= 256) {
      work = 0;
      tick(ctx);
    }
  }
  ix.build(ctx);

  // pass state lives at module level and the callbacks are module-level functions:
  // fresh closures per scan would defeat the JIT's traces (they guard on function identity)
  const st = newPassState(ctx, ix, poolChunk, nPools + 1);
  beginPass(st, undefined);
  setPhase(ctx, "owners: plain chunks");

  // 1. plain in-use heap chunks
  const heapBytes = forEachInUseChunk(ctx, inp.regions, visitChunk);
  const edges = st.edges;
  const chunkNode = st.chunkNode;
  const chunkStart = st.chunkStart;
  const chunkEnd = st.chunkEnd;

  // constant step names: a string made inside a slice can cost a rehash of LuaJIT's string table
  if (trace) trace("owners: plain chunks");
  setPhase(ctx, "owners: chunk index");
  // chunks holding pool pointers become nodes too
  for (let j = 0; j < chunkStart.length; j++) {
    ix.add(chunkStart[j], chunkEnd[j], chunkNode.get(chunkStart[j])!);
    if (j % 1024 === 1023) tick(ctx);
  }
  ix.build(ctx);

  // 2. unrooted pools' memory
  setPhase(ctx, "owners: unrooted pools");
  for (let k = 0; k < nPools; k++) {
    const p = pools[k];
    if (p.rooted !== undefined) continue;
    tick(ctx);
    st.curPool = k + 1;
    const nr = poolRanges(p);
    for (let j = 0; j < nr; j++) scanPoolRange(RG.s[j], RG.e[j]);
  }

  if (trace) trace("owners: pools");
  setPhase(ctx, "owners: roots");
  // 3. roots, in priority order: data segments, cycle pool (module confs), connection/request pools, LuaJIT
  const R: RootState = {
    confs: inp.confs, seen: new LuaTable(), segPathOf: [], segFileOf: [], floorOf: [], nameCache: new LuaTable(),
    node: [], at: [], kinds: [], luaStale: 0, segPath: "", segFile: 0, floor: 0, kind: "",
  };
  beginPass(st, R);
  const rootNode = R.node;
  const [winStart, winEnd] = copyWindow();
  R.kind = "segment";
  for (const seg of inp.segments) {
    R.segPath = seg.path;
    R.segFile = seg.fileStart ?? seg.start;
    scanRoot(seg.start, seg.end);
  }
  for (let ki = 0; ki < ROOTED_KINDS.length; ki++) {
    const kind = ROOTED_KINDS[ki];
    R.kind = ROOTED_KIND_NAMES[ki];
    for (let k = 0; k < nPools; k++) {
      const p = pools[k];
      if (p.rooted !== kind) continue;
      // per pool: the ranges are small (scanRange checks by bytes read), the pools many
      tick(ctx);
      const nr = poolRanges(p);
      for (let j = 0; j < nr; j++) {
        R.floor = RG.s[j];
        scanRoot(RG.s[j], RG.e[j]);
      }
    }
  }
  if (trace) trace("owners: segments + rooted pools");
  const late = lateDiscovery(ctx, inp, st, R, nPools);
  if (trace) trace("owners: late discovery");
  R.kind = "lua";
  setPhase(ctx, "owners: lua");
  // Dead cdata not yet swept still pass inCdata: forcing a GC cycle here would cost a
  // pause proportional to the Lua heap (collectgarbage("step") runs a whole mark phase
  // in one call), so a pool dropped by Lua shows as "lua" until the GC has swept it.
  if (copyUnavailable() !== undefined && inp.lua.length > 0) skip(ctx, "scan_lua_no_safe_copy");
  else for (const r of inp.lua) {
    // LuaJIT memory can be unmapped by our own allocations at any time: scan a copy,
    // and not the copy window itself
    if (r.start < winEnd && winStart < r.end) {
      st.refBytes += scanRangeCopied(ctx, ix, r.start, winStart, rootHit);
      st.refBytes += scanRangeCopied(ctx, ix, winEnd, r.end, rootHit);
    } else st.refBytes += scanRangeCopied(ctx, ix, r.start, r.end, rootHit);
  }
  if (trace) trace("owners: lua");
  if (R.luaStale > 0) ctx.skipped["lua_refs_outside_cdata"] = R.luaStale;

  const { owner, parent, altRoot, altPools, altOf } = searchOwners(ctx, {
    edges, nodes: st.nextNode, rootNode, rootKind: R.kinds, nPools, latePool: late.isPool,
  });

  // the retainer path of a pool is made only for the pools a group reports (a string per
  // pool, made in a slice, could cost a rehash of LuaJIT's string table)
  const retainerOf = (k: number): string => {
    const node = nodeOfPool(k, nPools, late);
    const o = owner.get(node);
    if (o === undefined) return "unreferenced";
    const hops: string[] = [];
    let n = node;
    for (let guard = 0; n !== 0 && guard < 64; guard++) {
      hops.push(n <= nPools || late.isPool.get(n) ? "pool" : "heap chunk");
      n = parent.get(n) ?? 0;
    }
    if (n !== 0) hops.push("…");
    hops.push(rootName(R, o));
    const path: string[] = [];
    for (let j = hops.length - 1; j >= 0; j--) path.push(hops[j]);
    return path.join(" → ");
  };
  const res: OwnerResult = { owner: new LuaTable(), depth: new LuaTable(), retainerOf, rootRef: new LuaTable(), alt: new LuaTable(), heapBytes, refBytes: st.refBytes };
  tick(ctx);
  // pools found late were appended to `pools` (index >= nPools) with node ids of their own
  for (let k = 0; k < pools.length; k++) {
    if (k % 128 === 127) tick(ctx);
    if (pools[k].rooted !== undefined) continue;
    const node = nodeOfPool(k, nPools, late);
    const o = owner.get(node);
    if (o === undefined) {
      res.owner.set(k, "unreferenced");
      continue;
    }
    let depth = 0;
    let n = node;
    for (let guard = 0; n !== 0 && guard < 64; guard++) {
      depth++;
      n = parent.get(n) ?? 0;
    }
    // names: one per owning root, made once (rootName caches)
    res.owner.set(k, rootName(R, o));
    res.depth.set(k, depth);
    res.rootRef.set(k, R.at[o]);
    const al = altOf.get(node);
    if (al !== undefined) {
      const list: { owner: string; at: number; pools: number }[] = [];
      for (const x of al) list.push({ owner: rootName(R, altRoot[x]), at: R.at[altRoot[x]], pools: altPools[x] });
      res.alt.set(k, list);
    }
  }
  return res;
}

noJit(attributeOwners);
