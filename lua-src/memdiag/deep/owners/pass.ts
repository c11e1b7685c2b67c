import { Ctx, skip, tickStep } from "../../base/context";
import { rdU64, rdU8 } from "../../safe/mem";
import { copySmall } from "../heap/copy";
import { FoundPool } from "./discover";
import { ConfStart, confAt, nameInSegment } from "./roots";
import { RangeIndex } from "./range-index";
import { scanRange, scanRangeCopied } from "./ref-scan";

/**
 * The owner pass's working state and the hit functions that build the reference graph:
 * heap chunk → pool, pool → pool/chunk and root → pool/chunk edges. The state lives at
 * module level and the callbacks are module-level functions: fresh closures per scan
 * would defeat the JIT's traces (they guard on function identity). One deep scan runs
 * at a time per worker, so one pass is under way at a time.
 */

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

/**
 * Memory ranges of a pool: the used part of each block (nothing lives in the tail
 * past d.last yet; a pointer there is a stale one from the memory's previous life)
 * and the large allocations, into RG.s/RG.e[0 .. n); returns n. Arrays at module level,
 * not a callback: a closure made per pool (FNEW) is not compiled by LuaJIT, so every
 * trace through such a loop aborted, in every scan, inside the slices. Read RG right
 * after the call: the next call overwrites it (one deep scan runs at a time).
 */
export const RG = { s: [] as number[], e: [] as number[] };
export function poolRanges(p: FoundPool): number {
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

export interface PassState {
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

export function newPassState(ctx: Ctx, ix: RangeIndex, poolChunk: LuaTable<number, boolean>, firstNode: number): PassState {
  return {
    ctx, ix, poolChunk, edges: new LuaTable(), seen: new LuaTable(), nextNode: firstNode,
    chunkNode: new LuaTable(), chunkStart: [], chunkEnd: [], curChunk: 0, curEnd: 0, curPool: 0, refBytes: 0,
  };
}

/** rooted pool kinds scanned as roots, in priority order, and their root kind names */
export const ROOTED_KINDS = ["cycle", "connection", "request"];
export const ROOTED_KIND_NAMES = ["cycle", "connection pool", "request pool"];

/** the pass under way (one deep scan at a time per worker) */
let S: PassState | undefined;

export function addEdgeS(st: PassState, src: number, dst: number): void {
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
export function scanPoolRange(s: number, used: number): void {
  const st = S!;
  if (st.ctx.maps.readable(s, used - s)) st.refBytes += scanRange(st.ctx, st.ix, s, used, poolHit);
  else skip(st.ctx, "scan_pool_unreadable");
}

/** one root range: its references to the index (module level, like the hit functions) */
export function scanRoot(s: number, e: number): void {
  if (e <= s) return;
  const st = S!;
  if (st.ctx.maps.readable(s, e - s)) st.refBytes += scanRange(st.ctx, st.ix, s, e, rootHit);
  else skip(st.ctx, "scan_root_unreadable");
}

export function visitChunk(this: void, user: number, usable: number, mmapped: boolean): void {
  const st = S!;
  if (st.poolChunk.get(user)) return;
  st.curChunk = user;
  st.curEnd = user + usable;
  if (mmapped) st.refBytes += scanRangeCopied(st.ctx, st.ix, user, user + usable, chunkHit);
  else st.refBytes += scanRange(st.ctx, st.ix, user, user + usable, chunkHit);
}

export interface RootState {
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
export function setPhase(ctx: Ctx, what: string): void {
  (ctx.budget as unknown as { phase: string }).phase = what;
  tickStep(ctx);
}

let RS: RootState | undefined;

export function rootHit(this: void, at: number, node: number): void {
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
export function rootName(R: RootState, j: number): string {
  let name = R.nameCache.get(j);
  if (name !== undefined) return name;
  const kind = R.kinds[j];
  if (kind === "segment") name = nameInSegment(R.at[j], R.segPathOf[j], R.segFileOf[j]);
  else if (kind === "cycle") name = confAt(R.confs, R.at[j], R.floorOf[j]) ?? "cycle pool";
  else name = kind;
  R.nameCache.set(j, name);
  return name;
}

/** the pass and root state the hit functions work on (one deep scan at a time) */
export function beginPass(st: PassState | undefined, R: RootState | undefined): void {
  S = st;
  RS = R;
}
