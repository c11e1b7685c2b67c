import * as ffi from "ffi";
import { Ctx, skip, tick } from "../../base/context";
import { Layout, off, sizeOf } from "../../nginx/types";
import { Maps } from "../../safe/maps";
import { hex, rdCStr, rdI32, rdPtr, rdU32, rdU64 } from "../../safe/mem";
import { symbolize } from "../../base/symbols";
import { cycleAddr } from "../../nginx/identity";
import { cdef } from "../../base/cdef";
import { AnonRange } from "../heap/walk";
import { noJit } from "../../base/nojit";

/**
 * The named roots of owner attribution: the rooted pools (cycle, connections,
 * requests), the modules' configuration structs, the writable data segments of
 * nginx and its modules (named by file and ELF section), and LuaJIT's memory.
 */

const MAX_CONNECTIONS = 16777216;
const MAX_MODULES = 4096;
const MAX_SERVERS = 65536;

function optOff(L: Layout, s: string, f: string): number | undefined {
  const st = L.structs[s];
  return st === undefined ? undefined : st.fields[f];
}

/**
 * Pools the rooted walk reaches, by head address: the cycle pool, the pool of every
 * active or fake (Lua timer) connection and of every request in progress.
 * Recomputed here (cheap: one pass over the connection slots) with the same rules
 * as layers/pools/rooted.ts.
 */
export function rootedPoolSet(ctx: Ctx, L: Layout): LuaTable<number, string> {
  const out = new LuaTable<number, string>();
  const maps = ctx.maps;
  const cycle = cycleAddr();
  if (!maps.readable(cycle, sizeOf(L, "ngx_cycle_t"))) return out;
  const cyclePool = rdPtr(cycle + off(L, "ngx_cycle_t", "pool"));
  if (cyclePool !== 0) out.set(cyclePool, "cycle");
  const conns = rdPtr(cycle + off(L, "ngx_cycle_t", "connections"));
  const n = rdU64(cycle + off(L, "ngx_cycle_t", "connection_n"));
  const cs = sizeOf(L, "ngx_connection_t");
  if (n > MAX_CONNECTIONS || !maps.readable(conns, n * cs)) {
    skip(ctx, "rootset_connections_unreadable");
    return out;
  }
  const arrEnd = conns + n * cs;
  const cFd = off(L, "ngx_connection_t", "fd");
  const cData = off(L, "ngx_connection_t", "data");
  const cPool = off(L, "ngx_connection_t", "pool");
  const rSig = off(L, "ngx_http_request_t", "signature");
  const rPool = off(L, "ngx_http_request_t", "pool");
  const rConn = off(L, "ngx_http_request_t", "connection");
  const sig = L.constants["NGX_HTTP_REQUEST_SIGNATURE"] ?? 0x50545448;
  for (let i = 0; i < n; i++) {
    // one slot costs up to ~1 us (interpreted: see noJit below): check the budget every 64
    // slots. After a yield the array (allocated once per cycle) is checked again before reading on.
    if (i % 64 === 63 && tick(ctx) && !ctx.maps.readable(conns, n * cs)) {
      skip(ctx, "rootset_connections_unreadable");
      return out;
    }
    const c = conns + i * cs;
    const fd = rdI32(c + cFd);
    const data = rdPtr(c + cData);
    // a free slot links to the next free slot (or NULL)
    if (fd === -1 && (data === 0 || (data >= conns && data < arrEnd))) continue;
    const pool = rdPtr(c + cPool);
    // a fake connection may borrow the cycle pool (lua-nginx-module's init_worker does): the cycle wins
    if (pool !== 0 && out.get(pool) === undefined) out.set(pool, "connection");
    if (data !== 0 && data % 8 === 0 && ctx.maps.readable(data, rPool + 8) && rdU32(data + rSig) === sig && rdPtr(data + rConn) === c) {
      const rp = rdPtr(data + rPool);
      if (rp !== 0 && out.get(rp) === undefined) out.set(rp, "request");
    }
  }
  return out;
}

export interface ConfStart {
  addr: number;
  name: string;
}

/**
 * Start addresses of every module's configuration structs, named
 * "<module> (main conf)" etc.: core modules through cycle->conf_ctx[index], HTTP
 * modules through the http{} context (main, and the http-level srv/loc confs) and,
 * when the layout knows ngx_http_core_main_conf_t.servers, every server{}.
 * Sorted by address.
 */
/**
 * Basenames of the files that hold nginx modules (the ngx_module_t structs of
 * cycle->modules): the nginx binary and every loaded dynamic module. Their data
 * segments are roots; other libraries' (lua-cjson, OpenSSL, ...) are not: they hold
 * no pools, but stale pointers into memory glibc has since given to a pool.
 */
export function moduleFiles(ctx: Ctx, L: Layout): LuaTable<string, boolean> {
  const out = new LuaTable<string, boolean>();
  const maps = ctx.maps;
  const cycle = cycleAddr();
  if (!maps.readable(cycle, sizeOf(L, "ngx_cycle_t"))) return out;
  const modules = rdPtr(cycle + off(L, "ngx_cycle_t", "modules"));
  const modulesN = rdU64(cycle + off(L, "ngx_cycle_t", "modules_n"));
  if (modulesN > MAX_MODULES || !maps.readable(modules, modulesN * 8)) return out;
  for (let i = 0; i < modulesN; i++) {
    const m = rdPtr(modules + i * 8);
    const sym = symbolize(m);
    if (sym.module !== "") out.set(sym.module, true);
  }
  return out;
}

let filesCache: LuaTable<string, boolean> | undefined;
let filesCycle = 0;

export function moduleFilesCached(ctx: Ctx, L: Layout): LuaTable<string, boolean> {
  const cycle = cycleAddr();
  if (filesCache === undefined || filesCycle !== cycle) {
    filesCache = moduleFiles(ctx, L);
    filesCycle = cycle;
  }
  return filesCache;
}

let confsCache: ConfStart[] | undefined;
let confsCycle = 0;

/** moduleConfs, computed once per cycle: configuration structs do not move while a cycle lives */
export function moduleConfsCached(ctx: Ctx, L: Layout): ConfStart[] {
  const cycle = cycleAddr();
  if (confsCache === undefined || confsCycle !== cycle) {
    confsCache = moduleConfs(ctx, L);
    confsCycle = cycle;
  }
  return confsCache;
}

export function moduleConfs(ctx: Ctx, L: Layout): ConfStart[] {
  const maps = ctx.maps;
  const out: ConfStart[] = [];
  const cycle = cycleAddr();
  if (!maps.readable(cycle, sizeOf(L, "ngx_cycle_t"))) return out;
  const confCtx = rdPtr(cycle + off(L, "ngx_cycle_t", "conf_ctx"));
  const modules = rdPtr(cycle + off(L, "ngx_cycle_t", "modules"));
  const modulesN = rdU64(cycle + off(L, "ngx_cycle_t", "modules_n"));
  if (modulesN > MAX_MODULES || !maps.readable(modules, modulesN * 8) || !maps.readable(confCtx, modulesN * 8)) {
    skip(ctx, "confs_unreadable");
    return out;
  }
  const mIndex = off(L, "ngx_module_t", "index");
  const mCtxIndex = off(L, "ngx_module_t", "ctx_index");
  const mName = off(L, "ngx_module_t", "name");
  const mType = off(L, "ngx_module_t", "type");
  const HTTP = L.constants["NGX_HTTP_MODULE"] ?? 0x50545448;
  const CORE = L.constants["NGX_CORE_MODULE"] ?? 0x45524f43;
  const msize = sizeOf(L, "ngx_module_t");
  const http: { name: string; ctxIndex: number }[] = [];
  let httpCtx = 0;
  for (let i = 0; i < modulesN; i++) {
    const m = rdPtr(modules + i * 8);
    if (!maps.readable(m, msize)) continue;
    const name = rdCStr(maps, rdPtr(m + mName), 128) ?? `module#${i}`;
    const type = rdU64(m + mType);
    const index = rdU64(m + mIndex);
    if (type === CORE && index < modulesN) {
      const conf = rdPtr(confCtx + index * 8);
      if (conf !== 0 && maps.readable(conf, 8)) {
        if (name === "ngx_http_module") httpCtx = conf;
        else out.push({ addr: conf, name: `${name} (conf)` });
      }
    } else if (type === HTTP) {
      http.push({ name, ctxIndex: rdU64(m + mCtxIndex) });
    }
  }
  const hMain = off(L, "ngx_http_conf_ctx_t", "main_conf");
  const hSrv = off(L, "ngx_http_conf_ctx_t", "srv_conf");
  const hLoc = off(L, "ngx_http_conf_ctx_t", "loc_conf");
  const fromCtx = (hctx: number, main: boolean, where: string): void => {
    if (!maps.readable(hctx, 24)) return;
    const arrays: [number, string][] = [];
    if (main) arrays.push([rdPtr(hctx + hMain), "main conf"]);
    arrays.push([rdPtr(hctx + hSrv), `srv conf${where}`]);
    arrays.push([rdPtr(hctx + hLoc), `loc conf${where}`]);
    for (const [a, kind] of arrays) {
      if (!maps.readable(a, http.length * 8)) continue;
      for (const h of http) {
        if (h.ctxIndex >= http.length) continue;
        const conf = rdPtr(a + h.ctxIndex * 8);
        if (conf !== 0 && conf % 8 === 0 && maps.readable(conf, 8)) out.push({ addr: conf, name: `${h.name} (${kind})` });
      }
    }
  };
  if (httpCtx !== 0) {
    fromCtx(httpCtx, true, "");
    // per server{}: ngx_http_core_main_conf_t.servers → ngx_http_core_srv_conf_t *[] → ctx
    const sOff = optOff(L, "ngx_http_core_main_conf_t", "servers");
    const cOff = optOff(L, "ngx_http_core_srv_conf_t", "ctx");
    const core = http.find((h) => h.name === "ngx_http_core_module");
    if (sOff !== undefined && cOff !== undefined && core !== undefined && maps.readable(httpCtx, 8)) {
      const mainArr = rdPtr(httpCtx + hMain);
      const cmcf = maps.readable(mainArr, (core.ctxIndex + 1) * 8) ? rdPtr(mainArr + core.ctxIndex * 8) : 0;
      if (cmcf !== 0 && maps.readable(cmcf + sOff, 16)) {
        const elts = rdPtr(cmcf + sOff);
        const nelts = rdU64(cmcf + sOff + 8);
        if (nelts <= MAX_SERVERS && maps.readable(elts, nelts * 8)) {
          for (let s = 0; s < nelts; s++) {
            const cscf = rdPtr(elts + s * 8);
            if (maps.readable(cscf + cOff, 8)) fromCtx(rdPtr(cscf + cOff), false, ` #${s}`);
          }
        }
      }
    }
  }
  table.sort(out, (a, b) => a.addr < b.addr);
  // the same struct reached twice (inherited srv/loc confs): keep the first name
  const dedup: ConfStart[] = [];
  for (const c of out) if (dedup.length === 0 || dedup[dedup.length - 1].addr !== c.addr) dedup.push(c);
  return dedup;
}

/** Name of the conf struct that starts at or before `addr`, not before `floor` (same block), or undefined. */
export function confAt(confs: ConfStart[], addr: number, floor: number): string | undefined {
  let lo = 0;
  let hi = confs.length - 1;
  let best = -1;
  while (lo <= hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (confs[mid].addr <= addr) {
      best = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  if (best < 0 || confs[best].addr < floor) return undefined;
  return confs[best].name;
}

// ---- ELF sections, for naming data-segment roots ----

cdef(`
  typedef struct { uint32_t sh_name; uint32_t sh_type; uint64_t sh_flags; uint64_t sh_addr; uint64_t sh_offset;
                   uint64_t sh_size; uint32_t sh_link; uint32_t sh_info; uint64_t sh_addralign; uint64_t sh_entsize; } memdiag_elf64_shdr_t;
`);

interface Section {
  name: string;
  addr: number;
  size: number;
}

const sectionCache = new LuaTable<string, Section[]>();
const SHF_WRITE = 1;
const SHF_ALLOC = 2;

/** Writable allocated sections (.data, .bss, .got, ...) of an ELF file, by link-time address. */
function writableSections(path: string): Section[] {
  const hit = sectionCache.get(path);
  if (hit !== undefined) return hit;
  const out: Section[] = [];
  sectionCache.set(path, out);
  const [f] = io.open(path, "rb");
  if (!f) return out;
  const hdr = f.read(64) as string | undefined;
  if (hdr === undefined || hdr.length < 64 || string.sub(hdr, 1, 4) !== "\x7fELF" || string.byte(hdr, 5) !== 2) {
    f.close();
    return out;
  }
  const h = ffi.cast("const uint8_t *", hdr);
  const u16 = (o: number): number => h[o] + h[o + 1] * 256;
  const u64 = (o: number): number => {
    let v = 0;
    for (let i = 7; i >= 0; i--) v = v * 256 + h[o + i];
    return v;
  };
  const shoff = u64(0x28);
  const shentsize = u16(0x3a);
  const shnum = u16(0x3c);
  const shstrndx = u16(0x3e);
  if (shentsize !== 64 || shnum === 0 || shnum > 4096 || shstrndx >= shnum) {
    f.close();
    return out;
  }
  f.seek("set", shoff);
  const tab = f.read(shnum * 64) as string | undefined;
  if (tab === undefined || tab.length < shnum * 64) {
    f.close();
    return out;
  }
  const sh = ffi.cast("const memdiag_elf64_shdr_t *", tab);
  const strOff = tonumber(sh[shstrndx].sh_offset)!;
  const strSize = tonumber(sh[shstrndx].sh_size)!;
  f.seek("set", strOff);
  const strs = (f.read(Math.min(strSize, 1048576)) as string | undefined) ?? "";
  f.close();
  for (let i = 0; i < shnum; i++) {
    const s = sh[i];
    const flags = tonumber(s.sh_flags)!;
    if (flags % 2 === SHF_WRITE && Math.floor(flags / SHF_ALLOC) % 2 === 1) {
      const no = tonumber(s.sh_name)! + 1;
      const [name] = string.match(strs, "^[^%z]*", no);
      out.push({ name: name ?? "?", addr: tonumber(s.sh_addr)!, size: tonumber(s.sh_size)! });
    }
  }
  return out;
}

export interface SegmentRoot {
  start: number;
  end: number;
  /** file the segment belongs to */
  path: string;
  /** start of the file-backed part (dladdr knows it; the .bss tail may be past what it covers) */
  fileStart?: number;
}

function basename(p: string): string {
  const [b] = string.match(p, "([^/]+)$");
  return b ?? p;
}

/**
 * Writable data segments (file-backed rw-p mappings) of the files in `files` (nginx
 * and its modules) plus the anonymous mapping right after each (the rest of .bss).
 * `bss` marks the anonymous tails of every object, modules or not, so they are not
 * taken for LuaJIT memory.
 */
export function dataSegments(maps: Maps, files: LuaTable<string, boolean>): LuaMultiReturn<[SegmentRoot[], LuaTable<number, boolean>]> {
  const out: SegmentRoot[] = [];
  const bss = new LuaTable<number, boolean>();
  const list = maps.list;
  for (let i = 0; i < list.length; i++) {
    const m = list[i];
    if (!m.readable || string.sub(m.path, 1, 1) !== "/" || string.sub(m.perms, 1, 2) !== "rw" || string.sub(m.perms, 4, 4) !== "p") continue;
    const nx = list[i + 1];
    const tail = nx !== undefined && nx.start === m.end && nx.path === "" && nx.readable && string.sub(nx.perms, 1, 2) === "rw";
    if (tail) bss.set(nx.start, true);
    if (!files.get(basename(m.path))) continue;
    out.push({ start: m.start, end: m.end, path: m.path, fileStart: m.start });
    if (tail) out.push({ start: nx.start, end: nx.end, path: m.path, fileStart: m.start });
  }
  return $multi(out, bss);
}

/**
 * "ngx_http_x_module.so (.bss+0x40)" for a word at `addr` in a data segment of `path`;
 * an exported variable's name only when the address lies inside it.
 */
export function nameInSegment(addr: number, path: string, fileStart?: number): string {
  const s = symbolize(addr);
  const file = basename(path);
  if (s.exact) return `${file} (${s.name})`;
  let offset = s.offset;
  if (s.module === "") {
    // past what dladdr covers (the anonymous .bss tail): offset from the file's load base
    const f = fileStart !== undefined ? symbolize(fileStart) : undefined;
    if (f === undefined || f.module === "") return `${file} (${hex(addr)})`;
    offset = addr - (fileStart! - f.offset);
  }
  for (const sec of writableSections(path)) {
    if (offset >= sec.addr && offset < sec.addr + sec.size) {
      return `${file} (${sec.name}+${hex(offset - sec.addr)})`;
    }
  }
  return `${file} (${hex(offset)})`;
}

/**
 * LuaJIT-owned memory: the private anonymous rw ranges that are neither glibc's
 * (heap, mmapped chunks, thread arenas) nor the tail of a .bss.
 */
export function luaRegions(other: AnonRange[], bss: LuaTable<number, boolean>): SegmentRoot[] {
  const out: SegmentRoot[] = [];
  for (const r of other) {
    if (bss.get(r.mapping)) continue;
    out.push({ start: r.start, end: r.end, path: "lua" });
  }
  return out;
}

noJit(moduleConfs);
// twice per scan, over every connection slot: compiled, its trace and the side traces of
// slots in new states were compiled again every few scans, 0.3-0.7 ms each inside a slice;
// interpreted it costs ~1 us a slot (10 ms a scan at 10,000 connections, in checked slices)
noJit(rootedPoolSet);
noJit(dataSegments);
noJit(luaRegions);
