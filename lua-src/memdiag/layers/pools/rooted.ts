/**
 * The rooted pool walk: the pools nginx itself points at. The cycle pool
 * (reported alone), every in-use connection's pool (cycle->connections[]), and
 * every active request's pool (c->data carrying the "HTTP" signature; the main
 * request's pool — subrequests share it). Aggregated by kind, plus a bounded
 * top-N of the largest connection/request pools and connection counts by listener.
 *
 * Sliced: the slot loop calls tick(ctx); after a yield the address space is
 * re-read and the cycle roots re-checked, and each slot is read afresh.
 *
 * Counts are a snapshot at visit: between two slices connections close and their
 * slots are reused, so nginx's own counters (free_connection_n) read once would not
 * match slots counted later. Each slot index is classified exactly once, when the
 * first pass reaches it: free (on the free list), active (a socket) or socket-less;
 * `free` is the number of slots seen free, so active + free + fake <= connection_n
 * whatever happens between slices. Slots revisited in the second pass (outgoing and
 * socket-less ones) are only walked if they still hold what the first visit saw
 * (same fd and pool); one freed or reused in between is skipped ("slot_reused"),
 * never counted again under another kind.
 */
import * as ffi from "ffi";
import { Ctx, skip, tick, tickStep } from "../../base/context";
import { Layout, off, sizeOf } from "../../nginx/types";
import { config } from "../../base/config";
import { arr } from "../../base/json";
import { cdef } from "../../base/cdef";
import { symbolize } from "../../base/symbols";
import { hex, rdI32, rdNgxStr, rdPtr, rdU32, rdU64 } from "../../safe/mem";
import { isFreeSlot, skipFreeSlots } from "./free-slots";
import { looksLikePoolHead, newPoolStats, PoolOffsets, poolOffsets, PoolStats, PoolTotals, totalsOut, walkPool } from "../../nginx/pool-walk";
import { cycleAddr, pagesize } from "../../nginx/identity";
import { cpuMs } from "../../base/clock";
import { noJit } from "../../base/nojit";
import { rangeReadable } from "../../nginx/validate";
import { h2Offsets, RootOffsets, rootOffsets } from "../../nginx/connection";

cdef(`extern uintptr_t ngx_current_msec;`);
const C = ffi.C;

/**
 * Work between budget checks: a free slot counts 1, a walked pool 16, so the clock is read after
 * at most 8 pools or 128 free slots. A pool of an idle keepalive connection walks in ~0.2 µs, but
 * the pools of requests in flight (proxied, with large allocations) cost far more: at 1,024 the
 * gaps between two checks reached 1-2 ms under load. The check is a clock read (vDSO); the
 * thread CPU clock (a system call) is read only when it yields (tickTimed). A worker with few
 * pools runs an interpreted copy of this module (layers/pools/rooted-jit.ts); compiled, the walk costs
 * 118-200 ns per pool at 10,000 connections, interpreted 743 (collect-cost).
 */
const TICK_WORK = 128;
const POOL_WORK = 16;
const MAX_LISTENERS = 4096;
/**
 * In the compiled walk (large workers), the request path (a request in flight: its pool, the top
 * list's entry with peer and URI) runs interpreted; the slot loop and the connection pools stay
 * compiled. Compiled, the request path's traces are recorded again collection after collection
 * under proxied load (new exits, aborts), which costs more than running it interpreted; the
 * slot loop has one stable shape and stays fast compiled (docs/design-figures.md).
 */
let busyPathsOff = false;

interface Group extends PoolTotals {
  kind: string;
  handlers: LuaTable<number, number>;
}

function newGroup(kind: string): Group {
  return { kind, pools: 0, blocks: 0, block_bytes: 0, used_bytes: 0, large_blocks: 0, large_bytes: 0, handlers: new LuaTable() };
}

function addTo(g: Group, st: PoolStats): void {
  g.pools++;
  g.blocks += st.blocks;
  g.block_bytes += st.block_bytes;
  g.used_bytes += st.used_bytes;
  g.large_blocks += st.large_blocks;
  g.large_bytes += st.large_bytes;
}

function resetStats(st: PoolStats): void {
  st.blocks = 0;
  st.block_bytes = 0;
  st.used_bytes = 0;
  st.large_blocks = 0;
  st.large_bytes = 0;
  st.create_size = 0;
}

/** handler address → count, named and merged by name, most frequent first */
function cleanupsOut(h: LuaTable<number, number>): { handler: string; count: number }[] {
  const byName = new LuaTable<string, number>();
  for (const [addr, n] of h) {
    const name = symbolize(addr).name;
    byName.set(name, (byName.get(name) ?? 0) + n);
  }
  const out: { handler: string; count: number }[] = [];
  for (const [name, n] of byName) out.push({ handler: name, count: n });
  table.sort(out, (a, b) => a.count > b.count || (a.count === b.count && a.handler < b.handler));
  return arr(out);
}

function groupOut(g: Group): { [k: string]: unknown } {
  const o = totalsOut(g);
  o.kind = g.kind;
  o.cleanups = cleanupsOut(g.handlers);
  return o;
}
// once per collection (output): compiled, cleanupsOut's sort comparator (a closure) aborted its trace every time
noJit(cleanupsOut);
noJit(groupOut);

interface TopEntry {
  total: number;
  kind: string;
  address: string;
  blocks: number;
  block_bytes: number;
  used_bytes: number;
  large_blocks: number;
  large_bytes: number;
  fd?: number;
  age_ms?: number;
  listen?: string;
  peer?: string;
  uri?: string;
}

/** bound on HTTP/2 priority-tree nodes visited per connection (nginx keeps at most a few hundred) */
const MAX_H2_NODES = 16384;

/** Bounded top-N by total bytes (blocks + large); entries are built only when they make the list. */
class Top {
  readonly list: TopEntry[] = [];
  private minTotal = 0;
  private minIdx = -1;
  constructor(private readonly n: number) {}

  /** Would a pool of this many bytes make the list? */
  wants(total: number): boolean {
    return this.n > 0 && (this.list.length < this.n || total > this.minTotal);
  }

  add(e: TopEntry): void {
    if (this.list.length < this.n) this.list.push(e);
    else this.list[this.minIdx] = e;
    this.minIdx = 0;
    this.minTotal = this.list[0].total;
    for (let i = 1; i < this.list.length; i++) {
      if (this.list[i].total < this.minTotal) {
        this.minTotal = this.list[i].total;
        this.minIdx = i;
      }
    }
    if (this.list.length < this.n) this.minTotal = 0;
  }
}

function entry(kind: string, addr: number, st: PoolStats): TopEntry {
  return {
    total: st.block_bytes + st.large_bytes,
    kind,
    address: hex(addr),
    blocks: st.blocks,
    block_bytes: st.block_bytes,
    used_bytes: st.used_bytes,
    large_blocks: st.large_blocks,
    large_bytes: st.large_bytes,
  };
}

function detailOut(e: TopEntry): { [k: string]: unknown } {
  return {
    kind: e.kind,
    address: e.address,
    blocks: e.blocks,
    block_bytes: e.block_bytes,
    used_bytes: e.used_bytes,
    large_blocks: e.large_blocks,
    large_bytes: e.large_bytes,
    fd: e.fd,
    age_ms: e.age_ms,
    listen: e.listen,
    peer: e.peer,
    uri: e.uri,
  };
}

/** The main request behind c->data, or 0: signature, back-pointer to c, and r->main checked. */
function requestOf(ctx: Ctx, R: RootOffsets, c: number, data: number): number {
  if (data === 0 || data % 8 !== 0) return 0;
  const maps = ctx.maps;
  if (!maps.readable(data, R.rSize)) return 0;
  if (rdU32(data) !== R.signature || rdPtr(data + R.rConnection) !== c) return 0;
  const m = rdPtr(data + R.rMain);
  if (m === data) return data;
  // c->data is a subrequest: its pool is the main request's
  if (m === 0 || m % 8 !== 0 || !maps.readable(m, R.rSize)) return 0;
  if (rdU32(m) !== R.signature || rdPtr(m + R.rConnection) !== c || rdPtr(m + R.rMain) !== m) return 0;
  return m;
}

/** An HTTP/2 stream's request: signature and r->main == r (its connection is the stream's fake one). */
function streamRequest(ctx: Ctx, R: RootOffsets, r: number): boolean {
  return r !== 0 && r % 8 === 0 && ctx.maps.readable(r, R.rSize) && rdU32(r) === R.signature && rdPtr(r + R.rMain) === r;
}

export function collectRooted(ctx: Ctx, layout: Layout | undefined, layoutError: string | undefined): { [k: string]: unknown } {
  if (!layout) return { available: false, error: layoutError ?? "no struct layout" };
  const t0 = cpuMs();
  const L = layout;
  const P: PoolOffsets = poolOffsets(L);
  const R = rootOffsets(L);
  const ps = pagesize();
  const cycle = cycleAddr();
  if (!ctx.maps.readable(cycle, sizeOf(L, "ngx_cycle_t"))) return { available: false, error: "ngx_cycle is not readable" };

  const st = newPoolStats();

  // the cycle pool, alone
  const cycleGroup = newGroup("cycle");
  const cyclePool = rdPtr(cycle + off(L, "ngx_cycle_t", "pool"));
  let cycleDetail: { [k: string]: unknown } | undefined;
  if (looksLikePoolHead(ctx, P, cyclePool, ps) && walkPool(ctx, P, cyclePool, st, cycleGroup.handlers)) {
    addTo(cycleGroup, st);
    cycleDetail = detailOut(entry("cycle", cyclePool, st));
  } else {
    return { available: false, error: "the cycle pool failed validation during the walk" };
  }

  // listeners: address of each ngx_listening_t → its index, for by_listener counts
  const lsOff = off(L, "ngx_cycle_t", "listening");
  const lsElts = rdPtr(cycle + lsOff + off(L, "ngx_array_t", "elts"));
  let lsN = rdU64(cycle + lsOff + off(L, "ngx_array_t", "nelts"));
  if (lsN > MAX_LISTENERS || (lsN > 0 && !rangeReadable(ctx.maps, lsElts, lsN * R.lsSize))) {
    skip(ctx, "listening_unreadable");
    lsN = 0;
  }
  const lsEnd = lsElts + lsN * R.lsSize;
  const lsCount: number[] = [];
  const lsName: string[] = [];
  for (let i = 0; i < lsN; i++) {
    lsCount[i] = 0;
    lsName[i] = rdNgxStr(ctx.maps, lsElts + i * R.lsSize + R.lsAddrText, 256) ?? "?";
  }

  // connection slots
  const connections = rdPtr(cycle + off(L, "ngx_cycle_t", "connections"));
  const connectionN = rdU64(cycle + off(L, "ngx_cycle_t", "connection_n"));
  const cSize = R.cSize;
  const arrEnd = connections + connectionN * cSize;
  if (!rangeReadable(ctx.maps, connections, connectionN * cSize)) {
    return { available: false, error: "cycle->connections is not readable" };
  }
  const connGroup = newGroup("connection");
  const reqGroup = newGroup("request");
  const top = new Top(config.top_n);
  const nowMsec = tonumber(C.ngx_current_msec)!;
  ngx.update_time();
  const nowWall = ngx.now() * 1000;

  let active = 0;
  /** slots seen on the free list when visited (not nginx's counter: see the header) */
  let free = 0;
  let fake = 0;
  let walked = 1;
  const cFd = R.cFd;
  const cData = R.cData;
  const cPool = R.cPool;
  const cListening = R.cListening;
  let aborted: string | undefined;

  // CPU time of this walk, yields and preemption excluded (ns per pool in the benchmark)
  let walkMs = 0;
  /** longest stretch of the walk between two yields */
  let walkMaxSegMs = 0;
  let segStart = t0;
  const tickTimed = (): boolean => {
    // the thread CPU clock is a system call (~1 µs here): read only when the tick yields
    if (!ctx.budget.due()) return false;
    const before = cpuMs();
    if (!tick(ctx)) return false;
    walkMs += before - segStart;
    if (before - segStart > walkMaxSegMs) walkMaxSegMs = before - segStart;
    segStart = cpuMs();
    return true;
  };
  const arrayMoved = (): boolean =>
    cycleAddr() !== cycle ||
    rdPtr(cycle + off(L, "ngx_cycle_t", "connections")) !== connections ||
    !rangeReadable(ctx.maps, connections, connectionN * cSize);

  // pools of requests walked in this collection: an outgoing connection may borrow its
  // request's pool (lua cosockets), which must not be counted twice
  const reqPools = new LuaTable<number, boolean>();
  // outgoing connections (no listener) and socket-less ones, visited after every request pool is
  // known, with the fd and pool their slot held at the first visit
  const deferred: number[] = [];
  const deferredFd: number[] = [];
  const deferredPool: number[] = [];
  const defer = (i: number, fd: number, c: number): void => {
    deferredFd[deferred.length] = fd;
    deferredPool[deferred.length] = rdPtr(c + cPool);
    deferred.push(i);
  };
  let outgoing = 0;
  let borrowed = 0;
  const fakePools = new LuaTable<number, boolean>();

  /** walk a request pool once (reqPools), into the request group and the top list */
  const walkRequest = (r: number, rpool: number, fd: number, listen: number, c: number): void => {
    if (!looksLikePoolHead(ctx, P, rpool, ps)) {
      skip(ctx, "request_pool_invalid");
      return;
    }
    resetStats(st);
    walked++;
    if (!walkPool(ctx, P, rpool, st, reqGroup.handlers)) return;
    reqPools.set(rpool, true);
    addTo(reqGroup, st);
    const rtotal = st.block_bytes + st.large_bytes;
    if (top.wants(rtotal)) {
      const e = entry("request", rpool, st);
      e.fd = fd;
      const startMs = rdU64(r + R.rStartSec) * 1000 + rdU64(r + R.rStartMsec);
      if (startMs > 0 && startMs <= nowWall + 1000) e.age_ms = Math.max(0, Math.floor(nowWall - startMs));
      if (listen >= 0) e.listen = lsName[listen];
      const peer = rdNgxStr(ctx.maps, c + R.cAddrText, 128);
      if (peer !== undefined && peer !== "") e.peer = peer;
      const uri = rdNgxStr(ctx.maps, r + R.rUri, 1024);
      if (uri !== undefined) e.uri = uri;
      top.add(e);
    }
  };

  if (!busyPathsOff) {
    // once: the flag is on the function's prototype, so it holds for every later collection's closure
    noJit(walkRequest);
    busyPathsOff = true;
  }

  /**
   * HTTP/2: c->data is the ngx_http_v2_connection_t (h2c->connection == c). Its state pool is
   * a connection pool; every open stream hangs in the priority tree (h2c->dependencies, each
   * node's children) with its own request pool.
   */
  const H2 = h2Offsets(L);
  let h2Connections = 0;
  let h2Streams = 0;
  const h2Stack: number[] = [];
  const walkH2 = (h2c: number, c: number, cpool: number, fd: number, listen: number): boolean => {
    if (H2 === undefined || h2c === 0 || h2c % 8 !== 0 || !ctx.maps.readable(h2c, H2.size)) return false;
    if (rdPtr(h2c + H2.connection) !== c) return false;
    h2Connections++;
    const hpool = rdPtr(h2c + H2.pool);
    if (hpool !== 0 && hpool !== cpool && looksLikePoolHead(ctx, P, hpool, ps)) {
      resetStats(st);
      walked++;
      if (walkPool(ctx, P, hpool, st, connGroup.handlers)) addTo(connGroup, st);
    }
    // depth-first over the priority tree; queues are circular with the head as sentinel
    let sp = 0;
    h2Stack[sp++] = h2c + H2.dependencies;
    let seen = 0;
    while (sp > 0) {
      const head = h2Stack[--sp];
      let q = rdPtr(head + H2.qNext);
      while (q !== head) {
        if (++seen > MAX_H2_NODES) {
          skip(ctx, "h2_tree_bound");
          return true;
        }
        const node = q - H2.nodeQueue;
        if (!ctx.maps.readable(node, H2.nodeSize)) {
          skip(ctx, "h2_node_unreadable");
          break;
        }
        const stream = rdPtr(node + H2.nodeStream);
        if (stream !== 0 && ctx.maps.readable(stream, H2.streamSize)) {
          const r = rdPtr(stream + H2.streamRequest);
          if (streamRequest(ctx, R, r)) {
            h2Streams++;
            const rpool = rdPtr(r + R.rPool);
            if (rpool !== 0 && rpool !== cpool && reqPools.get(rpool) === undefined) walkRequest(r, rpool, fd, listen, c);
          }
        }
        const children = node + H2.nodeChildren;
        if (rdPtr(children + H2.qNext) !== children && sp < 256) h2Stack[sp++] = children;
        q = rdPtr(q + H2.qNext);
      }
    }
    return true;
  };

  const visit = (i: number, firstPass: boolean): void => {
    const c = connections + i * cSize;
    const fd = rdI32(c + cFd);
    const data = rdPtr(c + cData);
    let listen = -1;
    if (fd < 0) {
      // a free slot; anything else is a fake connection (Lua timers, ...) that owns a pool
      // without a socket. The first pass only visits slots skipFreeSlots stopped at, but a
      // deferred slot may have been freed since.
      if (isFreeSlot(fd, data, connections, arrEnd)) {
        if (firstPass) free++;
        return;
      }
      if (firstPass) {
        // visited after the requests: a socket-less slot may point at a pool that another
        // slot or a request owns (seen with Lua timer slots): those are counted once
        defer(i, fd, c);
        return;
      }
    } else {
      const l = rdPtr(c + cListening);
      if (firstPass) {
        active++;
        if (l === 0) {
          // the channel to the master borrows the cycle pool (reported as the cycle's); other
          // socket connections without a listener are outgoing: visited once requests are known
          if (rdPtr(c + cPool) !== cyclePool) {
            outgoing++;
            defer(i, fd, c);
          }
          return;
        }
      }
      if (l !== 0 && l >= lsElts && l < lsEnd && (l - lsElts) % R.lsSize === 0) {
        // the listening socket's own connection is not a client
        if (rdPtr(l + R.lsConnection) !== c) {
          listen = (l - lsElts) / R.lsSize;
          if (firstPass) lsCount[listen]++;
        }
      }
    }
    const pool = rdPtr(c + cPool);
    // the channel connection to the master borrows the cycle pool: reported once, as the cycle's
    if (pool === 0 || pool === cyclePool) return;
    if (!firstPass && (reqPools.get(pool) !== undefined || fakePools.get(pool) !== undefined)) {
      if (fd < 0) skip(ctx, "fake_connection_shared_pool");
      else borrowed++;
      return;
    }
    if (!looksLikePoolHead(ctx, P, pool, ps)) {
      // socket-less slots outside the free list whose pool is already gone (seen with Lua timers)
      skip(ctx, fd < 0 ? "fake_connection_stale_pool" : "connection_pool_invalid");
      return;
    }
    // socket-less but in use: only trusted when it carries its fake request (Lua timers and
    // the like: signature "HTTP", r->connection == c, r->pool == c->pool). Slots left behind
    // with a destroyed pool whose address malloc has reused would otherwise count a pool
    // that belongs to someone else.
    if (fd < 0) {
      const fr = requestOf(ctx, R, c, data);
      if (fr === 0 || rdPtr(fr + R.rPool) !== pool) {
        skip(ctx, "fake_connection_unverified");
        return;
      }
      fake++;
      fakePools.set(pool, true);
    }
    resetStats(st);
    walked++;
    if (!walkPool(ctx, P, pool, st, connGroup.handlers)) return;
    addTo(connGroup, st);
    const total = st.block_bytes + st.large_bytes;
    if (top.wants(total)) {
      const e = entry("connection", pool, st);
      e.fd = fd;
      const start = rdU64(c + R.cStart);
      if (start > 0 && start <= nowMsec) e.age_ms = nowMsec - start;
      if (listen >= 0) e.listen = lsName[listen];
      const peer = rdNgxStr(ctx.maps, c + R.cAddrText, 128);
      if (peer !== undefined && peer !== "") e.peer = peer;
      top.add(e);
    }

    const r = requestOf(ctx, R, c, data);
    if (r === 0) {
      if (H2 !== undefined && fd >= 0 && data !== 0) walkH2(data, c, pool, fd, listen);
      return;
    }
    const rpool = rdPtr(r + R.rPool);
    // fake requests (Lua timers) share the connection's pool: counted once, as the connection's
    if (rpool === 0 || rpool === pool || reqPools.get(rpool) !== undefined) return;
    walkRequest(r, rpool, fd, listen, c);
  };

  let lastWork = 0;
  let i = 0;
  while (i < connectionN) {
    // after a yield other code ran: the cycle and the array must be where they were; slots are re-read
    const work = i + walked * POOL_WORK;
    if (work - lastWork >= TICK_WORK) {
      lastWork = work;
      if (tickTimed() && arrayMoved()) {
        aborted = "the connections array changed during the walk";
        break;
      }
    }
    // free slots (most of the array on a quiet worker) stepped over compiled, at most a check's worth
    const stop = Math.min(connectionN, i + TICK_WORK);
    const next = skipFreeSlots(connections, arrEnd, cSize, cFd, cData, i, stop);
    free += next - i;
    if (next < stop) {
      visit(next, true);
      i = next + 1;
    } else i = next;
  }
  for (let k = 0; k < deferred.length && !aborted; k++) {
    const work = connectionN + k + walked * POOL_WORK;
    if (work - lastWork >= TICK_WORK) {
      lastWork = work;
      if (tickTimed() && arrayMoved()) {
        aborted = "the connections array changed during the walk";
        break;
      }
    }
    // counted at its first visit; walked only if the slot still holds that connection
    const c = connections + deferred[k] * cSize;
    if (rdI32(c + cFd) !== deferredFd[k] || rdPtr(c + cPool) !== deferredPool[k]) {
      skip(ctx, "slot_reused");
      continue;
    }
    visit(deferred[k], false);
  }
  const lastSeg = cpuMs() - segStart;
  walkMs += lastSeg;
  if (lastSeg > walkMaxSegMs) walkMaxSegMs = lastSeg;
  if (aborted) return { available: false, error: aborted };
  // building the output (names, the top list's sort, the GC steps its tables cost): 0.3-0.7 ms
  // under load, in a slice of its own unless most of this one is left
  tickStep(ctx);

  const byListener: { listen: string; active: number }[] = [];
  for (let i = 0; i < lsN; i++) byListener.push({ listen: lsName[i], active: lsCount[i] });
  const topList = top.list;
  table.sort(topList, (a, b) => a.total > b.total);
  return {
    available: true,
    groups: arr([groupOut(cycleGroup), groupOut(connGroup), groupOut(reqGroup)]),
    cycle: cycleDetail,
    top: arr(topList.map((e) => detailOut(e))),
    connections: {
      active,
      connection_n: connectionN,
      free,
      fake,
      outgoing,
      borrowed_pools: borrowed,
      http2: h2Connections,
      http2_streams: h2Streams,
      by_listener: arr(byListener),
    },
    pools_walked: walked,
    walk_ms: walkMs,
    walk_max_slice_ms: walkMaxSegMs,
  };
}
