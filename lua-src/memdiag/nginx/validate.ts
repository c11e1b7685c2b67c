/**
 * Checks a struct layout for completeness, then against live invariants of this
 * worker's cycle, before anything walks with it. A wrong offset turns into a
 * wrong pointer, and a wrong pointer dereferenced through FFI kills the worker:
 * so every check below reads only memory that an earlier check proved mapped,
 * and the first failed invariant refuses the layout with a reason. Never guess.
 */
import * as ffi from "ffi";
import { Ctx } from "../base/context";
import { Maps } from "../safe/maps";
import { rdCStr, rdI32, rdNgxStr, rdPtr, rdU64, hex } from "../safe/mem";
import { Layout, off, sizeOf } from "./types";
import { looksLikePoolHead, newPoolStats, poolOffsets, walkPool } from "./pool-walk";
import { cycleAddr, pagesize } from "./identity";


/** Every struct member and constant the agent reads: a layout lacking one is refused at load. */
export const REQUIRED: { [struct: string]: string[] } = {
  ngx_str_t: ["len", "data"],
  ngx_array_t: ["elts", "nelts", "size", "nalloc"],
  ngx_list_t: ["last", "part.elts", "part.nelts", "part.next", "size", "nalloc"],
  ngx_list_part_t: ["elts", "nelts", "next"],
  ngx_pool_data_t: ["last", "end", "next", "failed"],
  ngx_pool_t: ["d.last", "d.end", "d.next", "d.failed", "max", "current", "chain", "large", "cleanup", "log"],
  ngx_pool_large_t: ["next", "alloc"],
  ngx_pool_cleanup_t: ["handler", "data", "next"],
  ngx_cycle_t: [
    "conf_ctx", "pool", "log", "free_connections", "free_connection_n", "modules", "modules_n", "listening",
    "shared_memory", "connection_n", "files_n", "connections", "conf_file", "conf_prefix", "prefix",
  ],
  ngx_connection_t: ["data", "fd", "listening", "log", "pool", "addr_text", "number", "start_time", "requests"],
  ngx_listening_t: ["fd", "addr_text", "addr_text_max_len", "connection"],
  ngx_shm_zone_t: ["data", "shm.addr", "shm.size", "shm.name", "init", "tag"],
  ngx_slab_pool_t: ["pfree", "start", "end", "addr"],
  ngx_module_t: ["ctx_index", "index", "name", "type", "ctx"],
  ngx_http_conf_ctx_t: ["main_conf", "srv_conf", "loc_conf"],
  ngx_event_conf_t: ["connections"],
  ngx_http_request_t: ["signature", "connection", "pool", "uri", "main", "start_sec", "start_msec"],
};
export const REQUIRED_CONSTANTS = ["NGX_CYCLE_POOL_SIZE", "NGX_DEFAULT_POOL_SIZE", "NGX_HTTP_MODULE", "NGX_CORE_MODULE", "sizeof_ptr"];

const MAX_MODULES = 4096;
/** NGX_MAX_DYNAMIC_MODULES: ngx_max_module = static modules + this */
const MAX_DYNAMIC_MODULES = 128;
const MAX_CONNECTIONS = 16777216;
const MAX_LISTENING = 65536;
const MAX_SHM_PARTS = 4096;
const MAX_SHM_ZONES = 65536;

/** The shape is right: every struct, member and constant present, numbers in range. */
export function checkComplete(L: unknown): string | undefined {
  if (type(L) !== "table") return "layout is not a JSON object";
  const l = L as Layout;
  if (type(l.id) !== "string" || type(l.nginx_version) !== "string" || type(l.configure_hash) !== "string") {
    return "layout lacks id / nginx_version / configure_hash";
  }
  if (type(l.structs) !== "table" || type(l.constants) !== "table") return "layout lacks structs / constants";
  for (const [name, fields] of pairs(REQUIRED)) {
    const s = l.structs[name];
    if (s === undefined || type(s) !== "table" || type(s.size) !== "number" || s.size <= 0 || type(s.fields) !== "table") {
      return `layout lacks struct ${name}`;
    }
    for (const f of fields) {
      const v = s.fields[f];
      if (type(v) !== "number" || v < 0 || v >= s.size || v !== Math.floor(v)) return `layout lacks or has a bad ${name}.${f}`;
    }
  }
  for (const c of REQUIRED_CONSTANTS) {
    if (type(l.constants[c]) !== "number") return `layout lacks constant ${c}`;
  }
  if (l.constants["sizeof_ptr"] !== 8 || !ffi.abi("64bit")) return "layout is not for a 64-bit build";
  return undefined;
}

/** [addr, addr+len) readable, allowing it to span adjacent readable mappings ([heap] may show as several lines). */
export function rangeReadable(maps: Maps, addr: number, len: number): boolean {
  if (maps.readable(addr, len)) return true;
  let i = maps.find(addr);
  if (i < 0 || addr < 4096) return false;
  const end = addr + len;
  while (true) {
    const m = maps.list[i];
    if (!m.readable) return false;
    if (m.end >= end) return true;
    if (i + 1 >= maps.n || maps.list[i + 1].start !== m.end) return false;
    i++;
  }
}

/** The cycle's roots as the layout reads them, after the cheap checks passed. */
export interface Roots {
  cycle: number;
  pool: number;
  connections: number;
  connectionN: number;
}

/**
 * Cheap per-collection check: the cycle and its pool still look right and the
 * connections array is where it was. Returns an error or undefined.
 */
export function quickCheck(ctx: Ctx, L: Layout, expect: Roots | undefined): string | undefined {
  const maps = ctx.maps;
  const cycle = cycleAddr();
  if (!maps.readable(cycle, sizeOf(L, "ngx_cycle_t"))) return `ngx_cycle ${hex(cycle)} is not readable`;
  const pool = rdPtr(cycle + off(L, "ngx_cycle_t", "pool"));
  const P = poolOffsets(L);
  if (!looksLikePoolHead(ctx, P, pool, pagesize())) return `cycle->pool ${hex(pool)} fails the pool header invariants`;
  const size = rdPtr(pool + P.end) - pool;
  const want = L.constants["NGX_CYCLE_POOL_SIZE"];
  if (size !== want) return `cycle pool's first block is ${size} bytes, expected NGX_CYCLE_POOL_SIZE ${want}`;
  if (expect) {
    if (cycle !== expect.cycle) return "ngx_cycle moved";
    if (rdPtr(cycle + off(L, "ngx_cycle_t", "connections")) !== expect.connections) return "cycle->connections moved";
    if (rdU64(cycle + off(L, "ngx_cycle_t", "connection_n")) !== expect.connectionN) return "cycle->connection_n changed";
  }
  return undefined;
}

/**
 * Full validation against the live cycle; run once per worker (and whenever the
 * quick check sees the cycle change). Returns [roots, undefined] or [undefined, reason].
 */
export function validateLive(ctx: Ctx, L: Layout): LuaMultiReturn<[Roots | undefined, string | undefined]> {
  const maps = ctx.maps;
  const q = quickCheck(ctx, L, undefined);
  if (q) return $multi(undefined, q);
  const cycle = cycleAddr();
  const pool = rdPtr(cycle + off(L, "ngx_cycle_t", "pool"));
  const ps = pagesize();

  // the cycle pool walks cleanly (blocks, large list, cleanups) — checked on a private skip table
  const scratch: Ctx = { maps, budget: ctx.budget, skipped: {}, mapsEpoch: ctx.mapsEpoch };
  if (!walkPool(scratch, poolOffsets(L), pool, newPoolStats(), undefined)) {
    let why = "";
    for (const [k] of pairs(scratch.skipped)) why = tostring(k);
    return $multi(undefined, `cycle pool does not walk cleanly (${why})`);
  }

  // prefix: the same string lua-nginx-module reads from the cycle
  const prefix = rdNgxStr(maps, cycle + off(L, "ngx_cycle_t", "prefix"), 4096);
  if (prefix !== ngx.config.prefix()) return $multi(undefined, `cycle->prefix reads '${prefix ?? "?"}', expected '${ngx.config.prefix()}'`);
  const confFile = rdNgxStr(maps, cycle + off(L, "ngx_cycle_t", "conf_file"), 4096);
  if (confFile === undefined || string.sub(confFile, 1, 1) !== "/") return $multi(undefined, "cycle->conf_file is not an absolute path");

  // modules: unique indices, names readable, the core modules have the right type
  const modules = rdPtr(cycle + off(L, "ngx_cycle_t", "modules"));
  const modulesN = rdU64(cycle + off(L, "ngx_cycle_t", "modules_n"));
  if (modulesN < 1 || modulesN > MAX_MODULES || !rangeReadable(maps, modules, modulesN * 8)) {
    return $multi(undefined, `cycle->modules (${modulesN}) is not a readable array`);
  }
  const mSize = sizeOf(L, "ngx_module_t");
  const mIndex = off(L, "ngx_module_t", "index");
  const mName = off(L, "ngx_module_t", "name");
  const mType = off(L, "ngx_module_t", "type");
  let sawHttpCore = false;
  const seen = new LuaTable<number, boolean>();
  let eventsIndex = -1;
  let eventCoreCtxIndex = -1;
  for (let i = 0; i < modulesN; i++) {
    const m = rdPtr(modules + i * 8);
    if (!maps.readable(m, mSize)) return $multi(undefined, `cycle->modules[${i}] is not readable`);
    // dynamic modules are inserted by load order, so position and index differ; indices are unique and bounded
    const idx = rdU64(m + mIndex);
    if (idx >= modulesN + MAX_DYNAMIC_MODULES || seen.get(idx) !== undefined) {
      return $multi(undefined, `cycle->modules[${i}]->index ${idx} is out of range or not unique`);
    }
    seen.set(idx, true);
    const name = rdCStr(maps, rdPtr(m + mName), 128);
    if (name === undefined || name === "") return $multi(undefined, `cycle->modules[${i}]->name is not a string`);
    const t = rdU64(m + mType);
    if (name === "ngx_events_module") eventsIndex = idx;
    if (name === "ngx_event_core_module") eventCoreCtxIndex = rdU64(m + off(L, "ngx_module_t", "ctx_index"));
    if (name === "ngx_core_module" && t !== L.constants["NGX_CORE_MODULE"]) return $multi(undefined, "ngx_core_module has the wrong type");
    if (name === "ngx_http_core_module") {
      if (t !== L.constants["NGX_HTTP_MODULE"]) return $multi(undefined, "ngx_http_core_module has the wrong type");
      sawHttpCore = true;
    }
  }
  if (!sawHttpCore) return $multi(undefined, "ngx_http_core_module not found in cycle->modules");

  // connections: the array is readable; the free list is exactly free_connection_n slots, all with fd -1
  const cSize = sizeOf(L, "ngx_connection_t");
  const connections = rdPtr(cycle + off(L, "ngx_cycle_t", "connections"));
  const connectionN = rdU64(cycle + off(L, "ngx_cycle_t", "connection_n"));
  const freeN = rdU64(cycle + off(L, "ngx_cycle_t", "free_connection_n"));
  if (connectionN < 1 || connectionN > MAX_CONNECTIONS) return $multi(undefined, `cycle->connection_n is ${connectionN}`);
  if (freeN > connectionN) return $multi(undefined, `free_connection_n ${freeN} > connection_n ${connectionN}`);
  const arrEnd = connections + connectionN * cSize;

  // connection_n is the configured worker_connections (events { worker_connections N; }):
  // ngx_event_get_conf(cycle->conf_ctx, ngx_event_core_module)->connections
  if (eventsIndex < 0 || eventCoreCtxIndex < 0 || eventCoreCtxIndex > MAX_MODULES) {
    return $multi(undefined, "ngx_events_module / ngx_event_core_module not found in cycle->modules");
  }
  const confCtx = rdPtr(cycle + off(L, "ngx_cycle_t", "conf_ctx"));
  if (!maps.readable(confCtx, (eventsIndex + 1) * 8)) return $multi(undefined, "cycle->conf_ctx is not readable");
  const evCtx = rdPtr(confCtx + eventsIndex * 8);
  if (!maps.readable(evCtx, 8)) return $multi(undefined, "the events conf context is not readable");
  const evConfs = rdPtr(evCtx);
  if (!maps.readable(evConfs, (eventCoreCtxIndex + 1) * 8)) return $multi(undefined, "the event module confs are not readable");
  const ecf = rdPtr(evConfs + eventCoreCtxIndex * 8);
  if (!maps.readable(ecf, sizeOf(L, "ngx_event_conf_t"))) return $multi(undefined, "ngx_event_core_module's conf is not readable");
  const workerConnections = rdU64(ecf + off(L, "ngx_event_conf_t", "connections"));
  if (workerConnections !== connectionN) {
    return $multi(undefined, `cycle->connection_n is ${connectionN} but worker_connections is ${workerConnections}`);
  }
  if (!rangeReadable(maps, connections, connectionN * cSize)) {
    return $multi(undefined, `cycle->connections (${connectionN} × ${cSize} bytes) is not readable`);
  }
  const fdOff = off(L, "ngx_connection_t", "fd");
  const dataOff = off(L, "ngx_connection_t", "data");
  let c = rdPtr(cycle + off(L, "ngx_cycle_t", "free_connections"));
  let nfree = 0;
  while (c !== 0) {
    if (c < connections || c >= arrEnd || (c - connections) % cSize !== 0) {
      return $multi(undefined, `free connection list leaves the connections array after ${nfree} slots`);
    }
    if (rdI32(c + fdOff) !== -1) return $multi(undefined, `free connection slot ${(c - connections) / cSize} has fd ${rdI32(c + fdOff)}, expected -1`);
    nfree++;
    if (nfree > connectionN) return $multi(undefined, "free connection list loops");
    c = rdPtr(c + dataOff);
  }
  if (nfree !== freeN) return $multi(undefined, `free connection list has ${nfree} slots, free_connection_n says ${freeN}`);

  // listening: an array of ngx_listening_t, each one's connection (if any) a slot that points back
  const lsOff = off(L, "ngx_cycle_t", "listening");
  const lsSize = sizeOf(L, "ngx_listening_t");
  const lsElts = rdPtr(cycle + lsOff + off(L, "ngx_array_t", "elts"));
  const lsN = rdU64(cycle + lsOff + off(L, "ngx_array_t", "nelts"));
  const lsEltSize = rdU64(cycle + lsOff + off(L, "ngx_array_t", "size"));
  const lsNalloc = rdU64(cycle + lsOff + off(L, "ngx_array_t", "nalloc"));
  if (lsEltSize !== lsSize) return $multi(undefined, `cycle->listening element size is ${lsEltSize}, sizeof(ngx_listening_t) is ${lsSize}`);
  if (lsN > lsNalloc || lsN > MAX_LISTENING || (lsN > 0 && !rangeReadable(maps, lsElts, lsN * lsSize))) {
    return $multi(undefined, "cycle->listening is not a readable array");
  }
  const cListening = off(L, "ngx_connection_t", "listening");
  for (let i = 0; i < lsN; i++) {
    const ls = lsElts + i * lsSize;
    const text = rdNgxStr(maps, ls + off(L, "ngx_listening_t", "addr_text"), 256);
    if (text === undefined || text === "") return $multi(undefined, `listening[${i}]->addr_text is not a string`);
    const lc = rdPtr(ls + off(L, "ngx_listening_t", "connection"));
    if (lc !== 0) {
      if (lc < connections || lc >= arrEnd || (lc - connections) % cSize !== 0) return $multi(undefined, `listening ${text}: connection is not a slot`);
      if (rdPtr(lc + cListening) !== ls) return $multi(undefined, `listening ${text}: its connection does not point back`);
      if (rdI32(lc + fdOff) !== rdI32(ls + off(L, "ngx_listening_t", "fd"))) return $multi(undefined, `listening ${text}: fd differs from its connection's`);
    }
  }

  // active connections: plausible fd, a listening entry or none, and a pool (if any) that passes the header invariants
  const P = poolOffsets(L);
  const cPool = off(L, "ngx_connection_t", "pool");
  const lsEnd = lsElts + lsN * lsSize;
  for (let i = 0; i < connectionN; i++) {
    const cc = connections + i * cSize;
    const fd = rdI32(cc + fdOff);
    // negative: a free slot (-1) or a socket-less fake connection (Lua timers use -1 or -2)
    if (fd < 0) continue;
    if (fd > MAX_CONNECTIONS) return $multi(undefined, `connection slot ${i} has fd ${fd}`);
    const l = rdPtr(cc + cListening);
    if (l !== 0 && (l < lsElts || l >= lsEnd || (l - lsElts) % lsSize !== 0)) return $multi(undefined, `connection slot ${i}: listening is not an entry of cycle->listening`);
    const p = rdPtr(cc + cPool);
    if (p !== 0 && !looksLikePoolHead(ctx, P, p, ps)) return $multi(undefined, `connection slot ${i} (fd ${fd}): pool ${hex(p)} fails the pool header invariants`);
  }

  // shared memory: an ngx_list_t of ngx_shm_zone_t
  const shmOff = off(L, "ngx_cycle_t", "shared_memory");
  const zSize = rdU64(cycle + shmOff + off(L, "ngx_list_t", "size"));
  if (zSize !== sizeOf(L, "ngx_shm_zone_t")) return $multi(undefined, `cycle->shared_memory element size is ${zSize}, sizeof(ngx_shm_zone_t) is ${sizeOf(L, "ngx_shm_zone_t")}`);

  // a request signature constant that matches what nginx stamps ("HTTP")
  if (L.constants["NGX_HTTP_MODULE"] !== 0x50545448) return $multi(undefined, "NGX_HTTP_MODULE is not \"HTTP\"");
  return $multi({ cycle, pool, connections, connectionN }, undefined);
}

export const LIMITS = { MAX_SHM_PARTS, MAX_SHM_ZONES, MAX_LISTENING, MAX_CONNECTIONS };
