import * as ffi from "ffi";
import { Ctx, refreshMaps, skip, tick, tickStep } from "../../base/context";
import { hex, rdU64, rdU8 } from "../../safe/mem";
import { symbolize } from "../../base/symbols";
import { arr } from "../../base/json";
import { HeapRegion, KIND_MAIN, forEachInUseChunk, log2floor, progress } from "../heap/walk";
import { COPY_BYTES, copyIn, copySmall, copyUnavailable, copyWindow } from "../heap/copy";
import { FoundPool, discoverPools } from "./discover";
import { PoolOffsets, looksLikePoolHead } from "../../nginx/pool-walk";
import { ConfStart, confAt, nameInSegment, SegmentRoot } from "./roots";
import { newHash, slicedOrder } from "../../base/sort";
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

const u32 = ffi.cast("const uint32_t *", 0);
const TWO32 = 4294967296;
const PAGE = 65536;
/** words scanned in one go (64 KB) */
const WORDS_PER_TICK = 8192;
/** bytes read between two budget checks, counted across scanRange calls */
const TICK_BYTES = 65536;
let sinceTick = 0;

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

type HitFn = (this: void, at: number, node: number) => void;
/** scanWords' hits: at most one per word of a call (WORDS_PER_TICK in place, COPY_BYTES / 8 copied) */
const HIT_MAX = Math.max(WORDS_PER_TICK, COPY_BYTES / 8);
const HIT_AT = ffi.new("double[?]", HIT_MAX);
const HIT_NODE = ffi.new("double[?]", HIT_MAX);

/** the ctx a sliced build/sort checks the budget of (module level: no closure per call) */
const BT: { ctx?: Ctx } = {};
function betweenTick(this: void): void {
  if (BT.ctx !== undefined) tick(BT.ctx);
}

/**
 * The hot loop: 8-aligned words of [from, to) that point into the index; hit()
 * gets the word's address + delta (the original address when scanning a copy).
 * One flat loop, no inner loop: each iteration either filters the word at i or takes one
 * step of the binary search for it (searching). A binary search nested in the word loop
 * aborted the trace compiler every scan ("loop unroll limit" from the search's exit side
 * trace running on through non-candidate words, "inner loop in root trace" for the word
 * loop): each abort a fraction of a millisecond inside a slice, in every scan.
 * The hits go to a fixed buffer (HIT_AT/HIT_NODE, returns their count) and deliver() calls
 * hit() afterwards: with the callbacks (three, with their own rare branches) inlined in the
 * word loop, its traces kept growing side traces scan after scan.
 */
function scanWords(ix: RangeIndex, from: number, to: number, delta: number): number {
  const lo = ix.lo;
  const hi = ix.hi;
  // high 32-bit halves of the indexed range: most words are rejected on one load
  const loH = Math.floor(lo / TWO32);
  const hiH = Math.floor((hi - 1) / TWO32);
  const pageLo = ix.pageLo;
  const pageHi = ix.pageHi;
  const starts = ix.starts;
  const ends = ix.ends;
  const nodes = ix.nodes;
  let i = from / 4;
  const iEnd = to / 4;
  let searching = false;
  let w = 0;
  let l = 0;
  let h = -1;
  let nHit = 0;
  while (i < iEnd) {
    if (searching) {
      if (l <= h) {
        const mid = Math.floor((l + h) / 2);
        if (starts[mid] <= w) {
          if (w < ends[mid]) {
            HIT_AT[nHit] = i * 4 + delta;
            HIT_NODE[nHit] = nodes[mid];
            nHit++;
            searching = false;
            i += 2;
          } else l = mid + 1;
        } else h = mid - 1;
      } else {
        searching = false;
        i += 2;
      }
    } else {
      const h32 = u32[i + 1];
      if (h32 >= loH && h32 <= hiH) {
        w = u32[i] + h32 * TWO32;
        if (w >= lo && w < hi) {
          const pg = Math.floor(w / PAGE);
          const pl = pageLo.get(pg);
          if (pl !== undefined) {
            l = pl;
            h = pageHi.get(pg)!;
            searching = true;
          } else i += 2;
        } else i += 2;
      } else i += 2;
    }
  }
  return nHit;
}

/** hit() for the nHit hits scanWords buffered */
function deliver(nHit: number, hit: HitFn): void {
  for (let k = 0; k < nHit; k++) hit(HIT_AT[k], HIT_NODE[k]);
}

/**
 * Scan [start, end) in place for pointers into the index; calls hit(address of the
 * word, node) for each. Returns the bytes scanned. For memory only other code can
 * unmap (glibc's, data segments): after a yield the rest must still be mapped.
 */
export function scanRange(ctx: Ctx, ix: RangeIndex, start: number, end: number, hit: HitFn): number {
  if (ix.n === 0) return 0;
  let a = start + ((8 - (start % 8)) % 8);
  if (end - a <= WORDS_PER_TICK * 8) {
    // most ranges (heap chunks, pool blocks): no loop here, so a trace through the caller's
    // loop meets one inner loop (the word loop), not two, and its side traces settle
    if (a >= end) return 0;
    const nHit = scanWords(ix, a, end - ((end - a) % 8), 0);
    if (nHit > 0) deliver(nHit, hit);
    progress.bytes += end - a;
    sinceTick += end - a;
    if (sinceTick >= TICK_BYTES) {
      sinceTick = 0;
      tick(ctx);
    }
    return end - a;
  }
  let scanned = 0;
  while (a < end) {
    const stop = Math.min(end, a + WORDS_PER_TICK * 8);
    const nHit = scanWords(ix, a, stop - ((stop - a) % 8), 0);
    if (nHit > 0) deliver(nHit, hit);
    scanned += stop - a;
    progress.bytes += stop - a;
    sinceTick += stop - a;
    a = stop;
    // budget checks by bytes read across calls: thousands of small ranges (pool blocks) add up
    if (sinceTick >= TICK_BYTES) {
      sinceTick = 0;
      if (tick(ctx) && a < end && !ctx.maps.readable(a, end - a)) {
        skip(ctx, "scan_range_unmapped");
        break;
      }
    }
  }
  return scanned;
}

/**
 * Scan [start, end) through a copy (deep/heap/copy.ts): for memory that may be unmapped
 * while we run (LuaJIT's). Stops at the first part that cannot be copied.
 */
export function scanRangeCopied(ctx: Ctx, ix: RangeIndex, start: number, end: number, hit: HitFn): number {
  if (ix.n === 0) return 0;
  let a = start + ((8 - (start % 8)) % 8);
  let scanned = 0;
  while (a < end) {
    const len = Math.min(end - a, COPY_BYTES);
    const [copy, got] = copyIn(a, len);
    const words = got - (got % 8);
    if (words > 0) {
      const nHit = scanWords(ix, copy, copy + words, a - copy);
      if (nHit > 0) deliver(nHit, hit);
    }
    scanned += words;
    progress.bytes += words;
    sinceTick += len;
    if (got < len) {
      skip(ctx, "scan_copy_short");
      break;
    }
    a += len;
    if (sinceTick >= TICK_BYTES) {
      sinceTick = 0;
      tick(ctx);
    }
  }
  return scanned;
}

/** GCHeader.gct of a cdata object: ~LJ_TCDATA */
const GCT_CDATA = 10;
/** a pointer (or uintptr_t) cdata: the value right after its 16-byte header; fields deeper in structs and arrays are not looked for (a wider search meets stale headers of other objects) */
const CDATA_BACK = 16;

/**
 * LuaJIT memory holds many stale words (dead objects, free blocks, internal
 * pointers to memory LuaJIT gave back and glibc reused). A Lua variable holding a
 * pointer holds it in an FFI cdata object: GCHeader {nextgc, marked, gct == 10},
 * ctypeid, payload at +16. Only words inside such an object count as a Lua reference.
 */
function inCdata(at: number): boolean {
  if (at < CDATA_BACK + 4096) return false;
  const [cp, got] = copySmall(at - CDATA_BACK, CDATA_BACK + 8);
  if (got !== CDATA_BACK + 8) return false;
  for (let back = 16; back <= CDATA_BACK; back += 8) {
    const h = cp + CDATA_BACK - back;
    if (rdU8(h + 9) !== GCT_CDATA) continue;
    if (rdU8(h + 8) >= 0x80) continue;
    const next = rdU64(h);
    if (next !== 0 && (next % 8 !== 0 || next < 65536 || next >= 140737488355328)) continue;
    return true;
  }
  return false;
}

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

/**
 * Memory ranges of a pool: the used part of each block (nothing lives in the tail
 * past d.last yet; a pointer there is a stale one from the memory's previous life)
 * and the large allocations, into RG.s/RG.e[0 .. n); returns n. Arrays at module level,
 * not a callback: a closure made per pool (FNEW) is not compiled by LuaJIT, so every
 * trace through such a loop aborted, in every scan, inside the slices. Read RG right
 * after the call: the next call overwrites it (one deep scan runs at a time).
 */
const RG = { s: [] as number[], e: [] as number[] };
function poolRanges(p: FoundPool): number {
  const m = p.mem;
  const rs = RG.s;
  const re = RG.e;
  let n = 0;
  for (let j = 0; j < m.blocks.length; j++) {
    rs[n] = m.blocks[j];
    re[n] = m.blockLast[j];
    n++;
  }
  // a large allocation's last usable word is the next chunk's prev_size: glibc's, not ours
  for (let j = 0; j < m.larges.length; j++) {
    rs[n] = m.larges[j];
    re[n] = m.larges[j] + m.largeSizes[j] - 8;
    n++;
  }
  return n;
}

interface PassState {
  ctx: Ctx;
  ix: RangeIndex;
  poolChunk: LuaTable<number, boolean>;
  edges: LuaTable<number, number[]>;
  seen: LuaTable<number, LuaTable<number, boolean>>;
  nextNode: number;
  chunkNode: LuaTable<number, number>;
  chunkStart: number[];
  chunkEnd: number[];
  curChunk: number;
  curEnd: number;
  curPool: number;
  refBytes: number;
}

function newPassState(ctx: Ctx, ix: RangeIndex, poolChunk: LuaTable<number, boolean>, firstNode: number): PassState {
  return {
    ctx, ix, poolChunk, edges: new LuaTable(), seen: new LuaTable(), nextNode: firstNode,
    chunkNode: new LuaTable(), chunkStart: [], chunkEnd: [], curChunk: 0, curEnd: 0, curPool: 0, refBytes: 0,
  };
}

/** rooted pool kinds scanned as roots, in priority order, and their root kind names */
const ROOTED_KINDS = ["cycle", "connection", "request"];
const ROOTED_KIND_NAMES = ["cycle", "connection pool", "request pool"];

/** the pass under way (one deep scan at a time per worker) */
let S: PassState | undefined;

function addEdgeS(st: PassState, src: number, dst: number): void {
  if (src === dst) return;
  let s = st.seen.get(src);
  if (s === undefined) {
    s = new LuaTable();
    st.seen.set(src, s);
    st.edges.set(src, []);
  }
  if (s.get(dst)) return;
  s.set(dst, true);
  st.edges.get(src)!.push(dst);
}

function chunkHit(this: void, _at: number, node: number): void {
  const st = S!;
  let src = st.chunkNode.get(st.curChunk);
  if (src === undefined) {
    src = st.nextNode++;
    st.chunkNode.set(st.curChunk, src);
    st.chunkStart.push(st.curChunk);
    st.chunkEnd.push(st.curEnd);
  }
  addEdgeS(st, src, node);
}

function poolHit(this: void, _at: number, node: number): void {
  const st = S!;
  addEdgeS(st, st.curPool, node);
}

/** one range of the pool S.curPool: its references to the index */
function scanPoolRange(s: number, used: number): void {
  const st = S!;
  if (st.ctx.maps.readable(s, used - s)) st.refBytes += scanRange(st.ctx, st.ix, s, used, poolHit);
  else skip(st.ctx, "scan_pool_unreadable");
}

/** one root range: its references to the index (module level, see LateState) */
function scanRoot(s: number, e: number): void {
  if (e <= s) return;
  const st = S!;
  if (st.ctx.maps.readable(s, e - s)) st.refBytes += scanRange(st.ctx, st.ix, s, e, rootHit);
  else skip(st.ctx, "scan_root_unreadable");
}

function visitChunk(this: void, user: number, usable: number, mmapped: boolean): void {
  const st = S!;
  if (st.poolChunk.get(user)) return;
  st.curChunk = user;
  st.curEnd = user + usable;
  if (mmapped) st.refBytes += scanRangeCopied(st.ctx, st.ix, user, user + usable, chunkHit);
  else st.refBytes += scanRange(st.ctx, st.ix, user, user + usable, chunkHit);
}

interface RootState {
  confs: ConfStart[];
  seen: LuaTable<number, boolean>;
  /**
   * what names each root hit, resolved only for the roots that end up owning something
   * (rootName): naming makes strings (dladdr, section names), and a string made inside a
   * slice can cost a rehash of LuaJIT's string table
   */
  segPathOf: string[];
  segFileOf: number[];
  floorOf: number[];
  nameCache: LuaTable<number, string>;
  node: number[];
  at: number[];
  /** root kind of each hit (segment, cycle, connection pool, request pool, lua) */
  kinds: string[];
  luaStale: number;
  segPath: string;
  segFile: number;
  floor: number;
  kind: string;
}

/**
 * A new step of the deep scan: named in its slow-slice reports (a constant string: see
 * DeepBudget.mark), and started in a fresh slice unless most of this one is left (tickStep)
 */
function setPhase(ctx: Ctx, what: string): void {
  (ctx.budget as unknown as { phase: string }).phase = what;
  tickStep(ctx);
}

let RS: RootState | undefined;

function rootHit(this: void, at: number, node: number): void {
  const R = RS!;
  if (R.seen.get(node)) return;
  if (R.kind === "lua" && !inCdata(at)) {
    R.luaStale++;
    return;
  }
  R.seen.set(node, true);
  R.segPathOf.push(R.segPath);
  R.segFileOf.push(R.segFile);
  R.floorOf.push(R.floor);
  R.node.push(node);
  R.at.push(at);
  R.kinds.push(R.kind);
}

/** the name of root hit j (computed once) */
function rootName(R: RootState, j: number): string {
  let name = R.nameCache.get(j);
  if (name !== undefined) return name;
  const kind = R.kinds[j];
  if (kind === "segment") name = nameInSegment(R.at[j], R.segPathOf[j], R.segFileOf[j]);
  else if (kind === "cycle") name = confAt(R.confs, R.at[j], R.floorOf[j]) ?? "cycle pool";
  else name = kind;
  R.nameCache.set(j, name);
  return name;
}

// ---- late discovery ----

/** words pointing at unknown heap memory followed per round, rounds, and pools found late, at most */
const MAX_LATE_TARGETS = 4096;
const MAX_LATE_POOLS = 1024;
/** each round that goes on adds a pool */
const MAX_LATE_ROUNDS = MAX_LATE_POOLS;
/** pool-head-looking chunks no known pool owns, remembered from the one heap walk */
const MAX_LATE_HEADS = 65536;

interface LateResult {
  /** node id of late pool j (pools[nPools + j]) */
  nodeOf: number[];
  isPool: LuaTable<number, boolean>;
}

/**
 * Late discovery's working state at module level, and its helpers module-level functions:
 * closures made per scan get traces that guard on their identity, so every scan compiled
 * the same loops again (several traces in a row, each 0.2-1.5 ms here, inside one slice).
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
function lateDiscovery(ctx: Ctx, inp: OwnerInputs, st: PassState, R: RootState, nPools: number): LateResult {
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

// helpers of attributeOwners at module level: a closure made per scan and called in a loop
// gets traces that guard on its identity, and every scan compiled the loop's traces again
function tierOf(this: void, kind: string): number {
  return kind === "lua" ? 2 : kind === "connection pool" || kind === "request pool" ? 1 : 0;
}
function isPoolNode(this: void, n: number, nPools: number, late: LateResult): boolean {
  return n <= nPools || late.isPool.get(n) === true;
}
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
  S = st;
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
  RS = R;
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
  LS = undefined;
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

  // BFS from the roots, tier by tier: what nginx's and the modules' own data (data
  // segments, configuration structs, the cycle pool) reach at any depth belongs to
  // them; connection/request pools, then Lua, only claim what is left. A stale word in
  // a request pool must not cut a module's chain of leaked pools in two.
  // sized for every node at once: growing them key by key rehashes inside slices
  /** node → the root hit (index into R's arrays) that owns it; names are made at the end */
  const owner = newHash<number, number>(st.nextNode);
  const parent = newHash<number, number>(st.nextNode);
  /** alternatives: root hits of a tier whose node another root of that tier reaches through the graph */
  const altNode: number[] = [];
  const altRoot: number[] = [];
  const altPools: number[] = [];
  let steps = 0;
  for (let tier = 0; tier <= 2; tier++) {
    // Within a tier, a root that holds the head of a chain wins over a root that points at
    // an interior member: conservative marking meets stale words (a .bss word left pointing
    // at memory that later became an old pool of some list), and seeding both at once would
    // give the stale word's node, and everything older in the list, to the stale word's
    // owner. So first a labelled BFS from all of the tier's roots: a root's node that is
    // reached from another root's part of the graph is interior (a cycle makes both
    // interior, and then neither is preferred). Heads seed first; interior roots claim
    // only what the heads left and are kept as alternatives of what they reach.
    const seeds: number[] = [];
    const label = newHash<number, number>(st.nextNode);
    const seedOf = new LuaTable<number, number>();
    for (let j = 0; j < rootNode.length; j++) {
      if (tierOf(R.kinds[j]) !== tier) continue;
      const node = rootNode[j];
      if (owner.get(node) !== undefined || seedOf.get(node) !== undefined) continue;
      seedOf.set(node, j);
      label.set(node, node);
      seeds.push(j);
    }
    const interior = new LuaTable<number, boolean>();
    if (seeds.length > 1) {
      // depth of each labelled node below its seed: a root's "entry" into the graph is its
      // node and what that node points at within two hops (a stale word often points at a
      // heap chunk that points at the pool: root → chunk → pool)
      const ldepth = newHash<number, number>(st.nextNode);
      const q: number[] = [];
      for (const j of seeds) {
        q.push(rootNode[j]);
        ldepth.set(rootNode[j], 0);
      }
      let qi = 0;
      while (qi < q.length) {
        if (++steps % 256 === 0) tick(ctx);
        const n = q[qi++];
        const out = edges.get(n);
        if (out === undefined) continue;
        const ln = label.get(n)!;
        const dn = ldepth.get(n)!;
        for (const m of out) {
          if (owner.get(m) !== undefined) continue;
          const lm = label.get(m);
          if (lm === undefined) {
            label.set(m, ln);
            ldepth.set(m, dn + 1);
            q.push(m);
          } else if (lm !== ln && ldepth.get(m)! <= 2) interior.set(lm, true);
        }
      }
    }
    for (let pass = 0; pass < 2; pass++) {
      const queue: number[] = [];
      for (const j of seeds) {
        const node = rootNode[j];
        if ((interior.get(node) === true) === (pass === 0)) continue;
        // an interior root: an alternative owner of what it reaches
        if (pass === 1 && altNode.length < 256) {
          altNode.push(node);
          altRoot.push(j);
          altPools.push(0);
        }
        if (owner.get(node) !== undefined) continue;
        owner.set(node, j);
        parent.set(node, 0);
        queue.push(node);
      }
      let qi = 0;
      while (qi < queue.length) {
        if (++steps % 256 === 0) tick(ctx);
        const n = queue[qi++];
        const out = edges.get(n);
        if (out === undefined) continue;
        const o = owner.get(n)!;
        for (const m of out) {
          if (owner.get(m) === undefined) {
            owner.set(m, o);
            parent.set(m, n);
            queue.push(m);
          }
        }
      }
    }
  }
  // what each alternative root reaches (pools only), bounded; it is listed with the group
  // of the first pools on its way (its entry: within two hops, as above)
  const altOf = new LuaTable<number, number[]>();
  for (let a = 0; a < altNode.length; a++) {
    const seen = new LuaTable<number, number>();
    const q: number[] = [altNode[a]];
    seen.set(altNode[a], 0);
    let qi = 0;
    let np = 0;
    while (qi < q.length && q.length < 65536) {
      if (++steps % 256 === 0) tick(ctx);
      const n = q[qi++];
      const d = seen.get(n)!;
      if (isPoolNode(n, nPools, late)) {
        np++;
        if (d <= 2) {
          const l = altOf.get(n) ?? [];
          l.push(a);
          altOf.set(n, l);
        }
      }
      const out = edges.get(n);
      if (out === undefined) continue;
      for (const m of out) {
        if (seen.get(m) === undefined) {
          seen.set(m, d + 1);
          q.push(m);
        }
      }
    }
    altPools[a] = np;
  }

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

// ---- grouping ----

interface Group {
  signature: string;
  create_size: number;
  pools: number;
  blocks: number;
  block_bytes: number;
  used_bytes: number;
  large_blocks: number;
  large_bytes: number;
  hist: LuaTable<number, [number, number]>;
  cleanups: LuaTable<string, number>;
  log: string;
  owner: string;
  /** the pool whose retainer path the group reports (the shortest), and its depth */
  retainerK: number;
  depth: number;
  rootRef: number;
  examples: string[];
  others: { owner: string; at: number; pools: number }[];
}

function logName(log: number, cycleLog: number): string {
  if (log === cycleLog) return "cycle->log";
  const s = symbolize(log);
  if (s.module !== "") return s.name;
  return "heap";
}

/**
 * Group unrooted pools by a stable signature: creation size, cleanup handler
 * names, log pointer name and owner. Largest groups first.
 */
export function groupUnrooted(ctx: Ctx, pools: FoundPool[], own: OwnerResult, cycleLog: number): object[] {
  const groups = new LuaTable<string, Group>();
  const order: Group[] = [];
  for (let k = 0; k < pools.length; k++) {
    if (k % 256 === 255) tick(ctx);
    const p = pools[k];
    if (p.rooted !== undefined) continue;
    const names: string[] = [];
    const counts = new LuaTable<string, number>();
    for (const [h, c] of p.handlers) {
      const nm = symbolize(h).name;
      if (counts.get(nm) === undefined) names.push(nm);
      counts.set(nm, (counts.get(nm) ?? 0) + c);
    }
    table.sort(names);
    const log = logName(p.log, cycleLog);
    const owner = own.owner.get(k) ?? "unreferenced";
    const key = `${p.st.create_size}|${names.join(",")}|${log}|${owner}`;
    let g = groups.get(key);
    if (g === undefined) {
      g = {
        signature: string.sub(ngx.md5(key), 1, 16),
        create_size: p.st.create_size,
        pools: 0,
        blocks: 0,
        block_bytes: 0,
        used_bytes: 0,
        large_blocks: 0,
        large_bytes: 0,
        hist: new LuaTable(),
        cleanups: new LuaTable(),
        log,
        owner,
        retainerK: k,
        depth: own.depth.get(k) ?? 0,
        rootRef: own.rootRef.get(k) ?? 0,
        examples: [],
        others: [],
      };
      groups.set(key, g);
      order.push(g);
    }
    g.pools++;
    g.blocks += p.st.blocks;
    g.block_bytes += p.st.block_bytes;
    g.used_bytes += p.st.used_bytes;
    g.large_blocks += p.st.large_blocks;
    g.large_bytes += p.st.large_bytes;
    for (const sz of p.mem.largeSizes) {
      const c = log2floor(sz);
      const e = g.hist.get(c) ?? [0, 0];
      e[0]++;
      e[1] += sz;
      g.hist.set(c, e);
    }
    for (const nm of names) g.cleanups.set(nm, (g.cleanups.get(nm) ?? 0) + counts.get(nm)!);
    const d = own.depth.get(k);
    if (d !== undefined && d < g.depth) {
      g.depth = d;
      g.retainerK = k;
      g.rootRef = own.rootRef.get(k) ?? 0;
    }
    if (g.examples.length < 8) g.examples.push(hex(p.addr));
    const al = own.alt.get(k);
    if (al !== undefined) {
      for (const a of al) {
        let dup = false;
        for (const o of g.others) if (o.at === a.at) dup = true;
        if (!dup && g.others.length < 4) g.others.push(a);
      }
    }
  }
  table.sort(order, (a, b) => a.block_bytes + a.large_bytes > b.block_bytes + b.large_bytes);
  const out: object[] = [];
  for (const g of order) {
    const hist: object[] = [];
    for (let c = 0; c < 64; c++) {
      const e = g.hist.get(c);
      if (e !== undefined) hist.push({ min_bytes: 2 ** c, max_bytes: 2 ** (c + 1) - 1, count: e[0], bytes: e[1] });
    }
    const cleanups: object[] = [];
    for (const [h, c] of g.cleanups) cleanups.push({ handler: h, count: c });
    table.sort(cleanups as { handler: string }[], (a, b) => a.handler < b.handler);
    out.push({
      signature: g.signature,
      create_size: g.create_size,
      pools: g.pools,
      blocks: g.blocks,
      block_bytes: g.block_bytes,
      used_bytes: g.used_bytes,
      large_blocks: g.large_blocks,
      large_bytes: g.large_bytes,
      large_histogram: arr(hist),
      cleanups: arr(cleanups),
      log: g.log,
      owner: g.owner,
      retainer: own.retainerOf(g.retainerK),
      root_ref: g.rootRef !== 0 ? hex(g.rootRef) : undefined,
      other_roots: g.others.length > 0 ? arr(g.others.map((o) => ({ owner: o.owner, root_ref: hex(o.at), pools: o.pools }))) : undefined,
      examples: arr(g.examples),
    });
  }
  return out;
}

noJit(addKnown);
noJit(attributeOwners);
noJit(groupUnrooted);
