import { Ctx, refreshMaps, skip } from "../../base/context";
import { Mapping, Maps, parseLine } from "../../safe/maps";
import { readSelfSmaps, scanSmaps, textSource, UNREADABLE } from "./smaps";
import { residentBytes } from "./resident";
import { checkedMem, VANISHED } from "../../safe/probe";
import { ShmZone } from "../shm/zones";
import { cpuMs, monoMs } from "../../base/clock";
import { locateLuajit, LjLocate } from "../luajit/alloc";
import { gcRunning, holdGc, releaseGc } from "../luajit/gc-hold";
import { jitLib } from "../../base/nojit";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

/**
 * The worker's address space by owner. Every mapping of /proc/self/smaps is cut into
 * pieces, each piece gets one class:
 *   glibc_heap  brk heap ([heap], several consecutive lines joined), glibc mmapped chunks
 *               (anonymous private memory whose chunk header — at +8, or at +prev_size+8 for
 *               memalign'ed ones — has IS_MMAPPED (2) alone and a page-multiple size that fits
 *               the mapping), thread-arena heaps (64 MB-aligned, valid heap_info, plus their
 *               PROT_NONE reservation up to 64 MB)
 *   luajit      this VM's lj_alloc segments and mcode areas (layers/luajit/alloc.ts) and LuaJIT direct
 *               chunks (prev_foot == 1, head == psize|2, fencepost 0xb at psize+8)
 *   shm_zone    shared mappings of nginx zones, by zone name (ShmZone.addr); shared anonymous
 *               mappings no zone claims are "(unnamed)" (all of them when zones are unknown)
 *   code        every mapping of an ELF object (a file with an executable mapping) by basename,
 *               its .bss continuation (anonymous rw right after the object's last mapping) and
 *               the kernel's [vdso]/[vvar]/[vsyscall]
 *   file        other file mappings
 *   stack       [stack], and thread stacks: anonymous memory right above a small PROT_NONE guard
 *   other_anon  the rest
 * Kernel mappings merge adjacent anonymous allocations, so one mapping may hold several
 * blocks: the walk goes block by block from the mapping start (each recognised block gives the
 * next block start) and from known boundaries (LuaJIT segments, 64 MB arena alignment); what it
 * cannot recognise is other_anon up to the next known boundary. Headers are read through
 * `readable` first; live, that is a kernel copy (safe/probe.ts): LuaJIT unmaps its big chunks on
 * its own schedule, so a mapping listed a moment ago may be gone.
 *
 * bytes = virtual size; rss_bytes from the Rss: line of each smaps record (mappings that changed
 * between the smaps read and the classification: resident pages by mincore). When a mapping is split
 * into pieces of different classes, its Rss is divided by resident pages (mincore), or by size
 * when mincore fails.
 * explained_ratio = RSS of all classes except other_anon / VmRSS (from /proc/self/status): the
 * share of resident memory whose owner is known (capped at 1: smaps is read a moment after status).
 */

export interface Region {
  class: string;
  name?: string;
  bytes: number;
  rss_bytes?: number;
  mappings: number;
}

export interface Mem {
  readable: (this: void, addr: number, len: number) => boolean;
  u64: (this: void, addr: number) => number;
  /** read these mapping starts ahead, in one go (safe/probe.ts CheckedMem) */
  prefetch?: (this: void, addrs: number[], n: number) => void;
}

export interface KnownRange {
  start: number;
  end: number;
  cls: string;
  name?: string;
}

export interface ClassifyInput {
  list: Mapping[];
  /** mapping start → Rss bytes (smaps); absent: no rss_bytes in the result */
  rss?: LuaTable<number, number>;
  mem: Mem;
  zones: ShmZone[];
  /** exact ranges with a known owner (LuaJIT segments, mcode areas), sorted by start */
  known: KnownRange[];
  /** resident bytes in [addr, addr+len) (mincore); undefined when unknown */
  resident?: (this: void, addr: number, len: number) => number | undefined;
  tick?: (this: void) => void;
  /** per-name entries kept for shm_zone and code; the rest fold into one "(others)" entry */
  topN: number;
  /** VmRSS, the denominator of explained_ratio */
  rssTotal: number;
}

export interface ClassTotals {
  bytes: number;
  rss: number;
}

export interface ClassifyResult {
  regions: Region[];
  explained: number;
  byClass: { [cls: string]: ClassTotals };
}

const PAGE = 4096;
/** mappings between budget checks (a mincore of a big mapping, a kernel copy per block: tens of us each); also the prefetch batch */
const TICK_EVERY = 8;
const HEAP_MAX = 64 * 1024 * 1024;
const GUARD_MAX = 1024 * 1024;
const STACK_MAX = 64 * 1024 * 1024;
const LEAD_MAX = 16 * 1024 * 1024;
const FIXED = ["glibc_heap", "luajit", "file", "stack", "other_anon"];
const NAMED = ["shm_zone", "code"];

interface Piece {
  start: number;
  end: number;
  cls: string;
  name?: string;
}

const baseCache = new LuaTable<string, string>();
let baseCached = 0;

function basename(p: string): string {
  const hit = baseCache.get(p);
  if (hit !== undefined) return hit;
  const [clean] = string.gsub(p, " %(deleted%)$", "");
  const [b] = string.match(clean, "([^/]+)$");
  const out = b ?? clean;
  if (baseCached < 1024) {
    baseCache.set(p, out);
    baseCached++;
  }
  return out;
}

function has(perms: string, c: string): boolean {
  const [i] = string.find(perms, c, 1, true);
  return i !== undefined;
}

/** glibc mmapped chunk at pos: its length (whole pages), or 0. */
export function glibcMmappedAt(mem: Mem, pos: number, end: number): number {
  if (!mem.readable(pos, 16)) return 0;
  const lead = mem.u64(pos);
  if (lead % 16 !== 0 || lead > LEAD_MAX || pos + lead + 16 > end) return 0;
  if (lead !== 0 && !mem.readable(pos + lead, 16)) return 0;
  const head = mem.u64(pos + lead + 8);
  if (head % 8 !== 2) return 0; // IS_MMAPPED only: no PREV_INUSE, no NON_MAIN_ARENA
  const total = lead + head - 2;
  if (total < PAGE || total % PAGE !== 0 || pos + total > end) return 0;
  return total;
}

/** LuaJIT lj_alloc direct (mmapped) chunk at pos: its length, or 0. */
export function ljDirectAt(mem: Mem, pos: number, end: number): number {
  if (!mem.readable(pos, 16) || mem.u64(pos) !== 1) return 0;
  const head = mem.u64(pos + 8);
  if (head % 4 !== 2) return 0; // CINUSE, not PINUSE
  const psize = head - 2;
  const total = psize + 32; // DIRECT_FOOT_PAD
  if (psize % 8 !== 0 || total % PAGE !== 0 || pos + total > end) return 0;
  if (!mem.readable(pos + psize + 8, 8) || mem.u64(pos + psize + 8) !== 11) return 0; // FENCEPOST_HEAD
  return total;
}

/** glibc thread-arena heap starting at pos (64 MB aligned, heap_info valid). */
export function glibcArenaAt(mem: Mem, pos: number, end: number): boolean {
  if (pos % HEAP_MAX !== 0 || !mem.readable(pos, 32)) return false;
  const ar = mem.u64(pos);
  const prev = mem.u64(pos + 8);
  const size = mem.u64(pos + 16);
  const mprot = mem.u64(pos + 24);
  if (size === 0 || size % PAGE !== 0 || size > HEAP_MAX || mprot < size || mprot > HEAP_MAX || pos + size > end) return false;
  if (prev === 0) return ar >= pos + 32 && ar <= pos + 64 && ar % 16 === 0; // first heap: arena follows heap_info
  return prev % HEAP_MAX === 0 && mem.readable(ar, 8) && mem.readable(prev, 32) && mem.u64(prev) === ar;
}

/** index of the first known range with end > pos (binary search) */
function knownFrom(known: KnownRange[], pos: number): number {
  let lo = 0;
  let hi = known.length;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (known[mid].end <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Pieces of an anonymous private mapping. `unknownCls` names the piece at the start when nothing is recognised there. */
function walkAnon(inp: ClassifyInput, m: Mapping, unknownCls: string, unknownName: string | undefined, out: Piece[]): void {
  const mem = inp.mem;
  const known = inp.known;
  let pos = m.start;
  const end = m.end;
  let k = knownFrom(known, pos);
  let recognised = false;
  for (let guard = 0; pos < end && guard < 100000; guard++) {
    // a mapping can hold thousands of merged blocks (each a kernel copy): tick inside it too
    if (inp.tick && guard % 64 === 63) inp.tick();
    while (k < known.length && known[k].end <= pos) k++;
    const kr = k < known.length ? known[k] : undefined;
    if (kr !== undefined && kr.start <= pos) {
      const e = Math.min(kr.end, end);
      out.push({ start: pos, end: e, cls: kr.cls, name: kr.name });
      pos = e;
      recognised = true;
      continue;
    }
    if (pos % HEAP_MAX === 0 && glibcArenaAt(mem, pos, end)) {
      const e = Math.min(pos + HEAP_MAX, end);
      out.push({ start: pos, end: e, cls: "glibc_heap" });
      pos = e;
      recognised = true;
      continue;
    }
    let n = glibcMmappedAt(mem, pos, end);
    if (n > 0) {
      out.push({ start: pos, end: pos + n, cls: "glibc_heap" });
      pos += n;
      recognised = true;
      continue;
    }
    n = ljDirectAt(mem, pos, end);
    if (n > 0) {
      out.push({ start: pos, end: pos + n, cls: "luajit" });
      pos += n;
      recognised = true;
      continue;
    }
    // unknown: up to the next place where a block is known to start
    let e = end;
    if (kr !== undefined && kr.start < e) e = kr.start;
    const nextArena = (Math.floor(pos / HEAP_MAX) + 1) * HEAP_MAX;
    if (nextArena < e) e = nextArena;
    // before any recognised block the mapping's own guess holds (.bss, thread stack), also across a
    // 64 MB boundary that turned out not to start an arena
    if (!recognised) out.push({ start: pos, end: e, cls: unknownCls, name: unknownName });
    else out.push({ start: pos, end: e, cls: "other_anon" });
    pos = e;
  }
}

/** Classify mappings into pieces (pure: memory comes through inp.mem). */
export function classifyPieces(inp: ClassifyInput): LuaMultiReturn<[Piece[][], number]> {
  const list = inp.list;
  const elf = new LuaTable<string, boolean>();
  for (const m of list) if (m.inode !== 0 && has(m.perms, "x")) elf.set(m.path, true);
  const perMapping: Piece[][] = [];
  let arenaUntil = 0;
  let prevElf: string | undefined; // ELF object whose mapping ends where the next one starts
  let prevEnd = -1;
  let guardEnd = -1; // end of a PROT_NONE guard: the mapping starting there is a thread stack
  const starts: number[] = [];
  for (let i = 0; i < list.length; i++) {
    // ticks are cheap until a yield is due; 32 mappings can take a loaded worker several slices
    if (inp.tick && i % TICK_EVERY === TICK_EVERY - 1) inp.tick();
    // the anonymous private starts up to the next tick (where walkAnon reads first) in one read:
    // a yield at the tick drops what was read before it
    if (inp.mem.prefetch !== undefined && i % TICK_EVERY === 0) {
      let n = 0;
      for (let j = i; j < i + TICK_EVERY && j < list.length; j++) {
        const x = list[j];
        if (x.inode === 0 && string.byte(x.perms, 1) === 114 && string.byte(x.perms, 4) === 112) starts[n++] = x.start;
      }
      inp.mem.prefetch(starts, n);
    }
    const m = list[i];
    const pieces: Piece[] = [];
    const shared = string.sub(m.perms, 4, 4) === "s";
    const anon = m.inode === 0 && (m.path === "" || string.sub(m.path, 1, 6) === "[anon:");
    const adjacent = prevEnd === m.start;
    if (m.path === "[heap]") {
      pieces.push({ start: m.start, end: m.end, cls: "glibc_heap" });
    } else if (string.sub(m.path, 1, 6) === "[stack") {
      pieces.push({ start: m.start, end: m.end, cls: "stack" });
    } else if (m.path === "[vdso]" || m.path === "[vvar]" || m.path === "[vsyscall]" || m.path === "[vvar_vclock]") {
      pieces.push({ start: m.start, end: m.end, cls: "code", name: m.path });
    } else if (shared && (anon || string.sub(m.path, 1, 9) === "/dev/zero" || string.sub(m.path, 1, 5) === "/SYSV")) {
      let name = "(unnamed)";
      for (const z of inp.zones) {
        if (z.addr !== undefined && z.addr < m.end && z.addr + z.size_bytes > m.start) {
          name = z.name;
          break;
        }
      }
      pieces.push({ start: m.start, end: m.end, cls: "shm_zone", name });
    } else if (m.inode !== 0) {
      if (elf.get(m.path)) pieces.push({ start: m.start, end: m.end, cls: "code", name: basename(m.path) });
      else pieces.push({ start: m.start, end: m.end, cls: "file" });
    } else if (m.start < arenaUntil) {
      pieces.push({ start: m.start, end: Math.min(m.end, arenaUntil), cls: "glibc_heap" });
      if (m.end > arenaUntil) pieces.push({ start: arenaUntil, end: m.end, cls: "other_anon" });
    } else if (!anon) {
      pieces.push({ start: m.start, end: m.end, cls: "other_anon" });
    } else if (!has(m.perms, "r")) {
      // PROT_NONE: a guard page below a thread stack when small and followed by memory
      const next = list[i + 1];
      const isGuard =
        m.end - m.start <= GUARD_MAX && next !== undefined && next.start === m.end && next.inode === 0 && has(next.perms, "w") && next.end - next.start <= STACK_MAX;
      pieces.push({ start: m.start, end: m.end, cls: isGuard ? "stack" : "other_anon" });
      if (isGuard) guardEnd = m.end;
    } else {
      let unknownCls = "other_anon";
      let unknownName: string | undefined;
      if (guardEnd === m.start) unknownCls = "stack";
      else if (adjacent && prevElf !== undefined && has(m.perms, "w")) {
        unknownCls = "code";
        unknownName = basename(prevElf);
      }
      walkAnon(inp, m, unknownCls, unknownName, pieces);
      for (const p of pieces) {
        if (p.cls === "glibc_heap" && p.start % HEAP_MAX === 0 && p.end - p.start <= HEAP_MAX && glibcArenaAt(inp.mem, p.start, p.end)) {
          arenaUntil = p.start + HEAP_MAX;
        }
      }
    }
    prevElf = m.inode !== 0 && elf.get(m.path) ? m.path : undefined;
    prevEnd = m.end;
    perMapping.push(pieces);
  }
  return $multi(perMapping, list.length);
}

/** Divide a mapping's Rss among its pieces (integers summing to rss). */
function splitRss(inp: ClassifyInput, pieces: Piece[], rss: number): number[] {
  const out: number[] = [];
  if (pieces.length === 1) {
    out.push(rss);
    return out;
  }
  const weights: number[] = [];
  let total = 0;
  let byResidency = inp.resident !== undefined;
  if (byResidency) {
    for (const p of pieces) {
      const r = inp.resident!(p.start, p.end - p.start);
      if (r === undefined) {
        byResidency = false;
        break;
      }
      weights.push(r);
      total += r;
    }
    if (total === 0) byResidency = false;
  }
  if (!byResidency) {
    weights.length = 0;
    total = 0;
    for (const p of pieces) {
      weights.push(p.end - p.start);
      total += p.end - p.start;
    }
  }
  // whole pages by weight, then the remainder to the heaviest pieces, never above a piece's size
  let given = 0;
  for (let i = 0; i < pieces.length; i++) {
    const share = Math.min(Math.floor((rss * weights[i]) / total / PAGE) * PAGE, pieces[i].end - pieces[i].start);
    out.push(share);
    given += share;
  }
  const order: number[] = [];
  for (let i = 0; i < pieces.length; i++) order.push(i);
  table.sort(order, (a, b) => weights[a] > weights[b]);
  for (const i of order) {
    if (given >= rss) break;
    const add = Math.min(rss - given, pieces[i].end - pieces[i].start - out[i]);
    out[i] += add;
    given += add;
  }
  if (given < rss) out[order[0]] += rss - given; // Rss rounding: keep the mapping's total exact
  return out;
}

/** Pieces → grouped regions + explained ratio. */
export function classify(inp: ClassifyInput): ClassifyResult {
  const [perMapping] = classifyPieces(inp);
  const withRss = inp.rss !== undefined;
  const groups = new LuaTable<string, Region>();
  const byClass: { [cls: string]: ClassTotals } = {};
  for (const c of FIXED) byClass[c] = { bytes: 0, rss: 0 };
  for (const c of NAMED) byClass[c] = { bytes: 0, rss: 0 };
  for (let i = 0; i < perMapping.length; i++) {
    if (inp.tick && i % TICK_EVERY === TICK_EVERY - 1) inp.tick();
    const pieces = perMapping[i];
    const m = inp.list[i];
    const rss = withRss ? inp.rss!.get(m.start) ?? 0 : 0;
    const shares = withRss ? splitRss(inp, pieces, rss) : undefined;
    for (let j = 0; j < pieces.length; j++) {
      const p = pieces[j];
      const key = p.name !== undefined ? p.cls + "\0" + p.name : p.cls;
      let g = groups.get(key);
      if (g === undefined) {
        g = { class: p.cls, name: p.name, bytes: 0, rss_bytes: withRss ? 0 : undefined, mappings: 0 };
        groups.set(key, g);
      }
      const b = p.end - p.start;
      const r = shares ? shares[j] : 0;
      g.bytes += b;
      g.mappings += 1;
      if (withRss) g.rss_bytes! += r;
      byClass[p.cls].bytes += b;
      byClass[p.cls].rss += r;
    }
  }
  const regions: Region[] = [];
  for (const c of FIXED) {
    const g = groups.get(c) ?? { class: c, bytes: 0, rss_bytes: withRss ? 0 : undefined, mappings: 0 };
    regions.push(g);
  }
  for (const c of NAMED) {
    const named: Region[] = [];
    for (const [, g] of groups) if (g.class === c && g.name !== undefined) named.push(g);
    table.sort(named, (a, b) => ((a.rss_bytes ?? 0) !== (b.rss_bytes ?? 0) ? (a.rss_bytes ?? 0) > (b.rss_bytes ?? 0) : a.bytes > b.bytes));
    let rest: Region | undefined;
    for (let i = 0; i < named.length; i++) {
      if (i < inp.topN) {
        regions.push(named[i]);
      } else {
        if (rest === undefined) rest = { class: c, name: "(others)", bytes: 0, rss_bytes: withRss ? 0 : undefined, mappings: 0 };
        rest.bytes += named[i].bytes;
        rest.mappings += named[i].mappings;
        if (withRss) rest.rss_bytes! += named[i].rss_bytes ?? 0;
      }
    }
    if (rest) regions.push(rest);
  }
  let known = 0;
  for (const [c, t] of pairs(byClass)) if (c !== "other_anon") known += t.rss;
  // smaps is read after status: a page or two of growth in between must not read as > 100 %
  const explained = withRss && inp.rssTotal > 0 ? Math.min(1, known / inp.rssTotal) : 0;
  return { regions, explained, byClass };
}

export type RawMapping = Omit<Mapping, "readable">;

/**
 * Mappings and their Rss from /proc/<pid>/smaps text (tests, other processes), through the
 * same parser as the live read (layers/system/smaps.ts). Returns undefined when the text does not
 * have the expected shape (kernels without VmFlags:).
 */
export function parseSmaps(text: string): LuaMultiReturn<[RawMapping[], LuaTable<number, number>] | [undefined, undefined]> {
  const list: RawMapping[] = [];
  let bad = false;
  const got = scanSmaps(textSource(text), undefined, (line) => {
    const m = parseLine(line);
    if (m === undefined) bad = true;
    else list.push(m);
  });
  if (typeof got === "string" || bad) return $multi(undefined, undefined);
  return $multi(list, got.rss);
}

// ---------------------------------------------------------------- live collection

/** what one read of smaps (SMAPS_CHUNK, layers/system/smaps.ts) may cost under load (a whole read takes several; docs/design-figures.md) */
const SMAPS_READ_MS = 0.4;

export interface RegionsInfo {
  luajit_bytes: number;
  luajit_rss_bytes?: number;
  luajit_method: string;
  luajit_error?: string;
  smaps_ms: number;
  classify_ms: number;
  /** time this collection of regions held the worker (wall, yields excluded) */
  active_ms: number;
  /** thread CPU time of it (yields excluded): what it costs, unaffected by a busy host */
  cpu_ms: number;
  /** mappings whose Rss came from mincore (changed since the smaps read, or anonymous with a reused read) */
  changed: number;
  /** false when the last smaps read was reused (see SMAPS_TARGET_MS) */
  smaps_read: boolean;
}

let lastInfo: RegionsInfo | undefined;

/** Details of the last collection (LuaJIT locate method, timings), for the luajit layer and benchmarks. */
export function lastRegionsInfo(): RegionsInfo | undefined {
  return lastInfo;
}

export const REGIONS_TOP_N = 12;

/**
 * Adds what the classification found about the LuaJIT allocator to the luajit layer (schema:
 * luajit.regions_bytes, regions_rss_bytes, regions_method, regions_error; all optional).
 */
export function addLuajitRegions(luajit: { [k: string]: unknown }): void {
  const i = lastInfo;
  if (i === undefined) return;
  luajit.regions_bytes = i.luajit_bytes;
  luajit.regions_rss_bytes = i.luajit_rss_bytes;
  luajit.regions_method = i.luajit_method;
  luajit.regions_error = i.luajit_error;
}

/** system.regions_ms: worker CPU time of the last region classification, yields excluded (schema: optional). */
export function regionsMs(): number | undefined {
  return lastInfo?.cpu_ms;
}

/**
 * smaps is read and parsed with the GC running (layers/system/smaps.ts: next to no garbage). Then the
 * LuaJIT GC is stopped while chunk headers and allocator state are read: it frees big objects and
 * empty segments with munmap at any allocation of ours, so memory that /proc/self/maps showed
 * readable a moment ago could be gone. Maps are re-read after stopping it, and again after every
 * yield (the GC runs during yields). Garbage made while it is stopped: a maps read or two (the
 * text and the lines not seen before) and the classification's own tables. Held and released
 * with layers/luajit/gc-hold.ts, which gives the collector back at the pace it had.
 */
/**
 * The kernel builds smaps by walking every page table: ~4-10 µs per mapping (0.4-1 ms for an idle
 * worker's ~110 mappings, 7-10 ms at 1,000+). To keep the average under SMAPS_TARGET_MS (CPU) per
 * collection, an expensive read is reused for the next N-1 collections (N = cost / target, at
 * most SMAPS_MAX_EVERY). In between, private anonymous mappings (heaps, LuaJIT, stacks: the ones
 * that move) get their resident bytes from mincore, and file/shared mappings keep the cached Rss.
 */
const SMAPS_TARGET_MS = 1;
const SMAPS_MAX_EVERY = 10;
let smapsCache: { rss: LuaTable<number, number>; ends: LuaTable<number, number> } | undefined;
let smapsSkip = 0;

function privateAnon(m: Mapping): boolean {
  return m.inode === 0 && string.byte(m.perms, 4) === 112 && (m.path === "" || string.sub(m.path, 1, 6) === "[anon:" || m.path === "[heap]" || m.path === "[stack]");
}

export function collectRegions(ctx: Ctx, zones: ShmZone[], rss: number): LuaMultiReturn<[Region[], number]> {
  const t0 = monoMs();
  const c0 = cpuMs();
  let yieldedMs = 0; // wall time spent away in yields: not our cost
  let yieldedCpu = 0; // thread CPU time of whatever ran during our yields
  // budget.check() rather than tick(): tick re-reads maps after every yield, which we only need
  // (once, with the GC stopped) when we are about to read memory. With 1,000+ mappings a maps read
  // costs more than a slice, and re-reading after every yield would turn each slice into one step.
  const tickTimed = (aheadMs = 0): boolean => {
    // the thread CPU clock is a system call (~1 µs here): read only around a yield
    if (!ctx.budget.due(aheadMs)) return false;
    const a = monoMs();
    const ac = cpuMs();
    ctx.budget.reserve(aheadMs);
    yieldedMs += monoMs() - a;
    yieldedCpu += cpuMs() - ac;
    return true;
  };
  const reuse = smapsCache !== undefined && smapsSkip > 0;
  if (reuse) {
    smapsSkip--;
  } else {
    // each read makes the kernel walk the page tables of the mappings it covers: it starts a
    // slice with room; the records it brought are parsed before the next read
    tickTimed(SMAPS_READ_MS);
    const got = readSelfSmaps(() => {
      tickTimed(SMAPS_READ_MS);
    });
    if (typeof got === "string") {
      skip(ctx, got === UNREADABLE ? "smaps_unreadable" : "smaps_unparsable");
      smapsCache = undefined;
    } else {
      smapsCache = got;
      const cost = cpuMs() - c0 - yieldedCpu;
      smapsSkip = Math.min(SMAPS_MAX_EVERY, Math.ceil(cost / SMAPS_TARGET_MS)) - 1;
    }
  }
  const tSmaps = monoMs() - t0;
  tickTimed(); // a slice boundary before the GC-stopped part

  const gcWasRunning = gcRunning();
  let changed = 0;
  // After a yield the maps must be re-read before memory is read again. That read costs more than a
  // slice once there are ~1,000 mappings; yielding again right after it would make every slice one
  // refresh and no progress. So after a refresh, work at least as long as the refresh took.
  let refreshCost = 0;
  let refreshedAt = 0;
  const checked = checkedMem(() => ctx.maps);
  const refresh = (): void => {
    const a = monoMs();
    checked.reset();
    refreshMaps(ctx);
    refreshedAt = monoMs();
    refreshCost = refreshedAt - a;
  };
  const onTick = (): void => {
    if (monoMs() - refreshedAt < refreshCost) return;
    if (!gcWasRunning) {
      if (tickTimed()) refresh();
      return;
    }
    // The GC is released only for a yield: released, the next allocation of ours may run a GC
    // step that sweeps (and munmaps) a big string or table, and the mappings read before would
    // be stale with no yield to say so (seen: a SIGSEGV at the start of a LuaJIT direct chunk
    // the sweep had just unmapped).
    if (!ctx.budget.due()) return;
    releaseGc();
    tickTimed();
    holdGc();
    refresh(); // others ran (and the GC) during the yield
  };
  // Header reads go through checkedMem: a mapping can still vanish under a read (another
  // thread's munmap, our own table growth moving a LuaJIT direct chunk), and then the read
  // fails instead of faulting. The classification is redone once on fresh maps; a second
  // failure gives the mappings' classes without reading memory (blind), never no snapshot.
  const blind: Mem = { readable: () => false, u64: () => error(VANISHED, 0) };
  const attempt = (mem: Mem): { res: ClassifyResult; lj: LjLocate } => {
    refresh();
    changed = 0;
    // Classify the mappings as they are now (GC stopped). smaps gave Rss a moment (or a few
    // collections) earlier: used for every mapping that is still the same; one that changed
    // meanwhile (the GC unmapped a chunk, the allocator grew a segment), and with a reused read
    // every private anonymous one, gets its resident bytes from mincore instead.
    const fresh = ctx.maps.list;
    let rssNow: LuaTable<number, number> | undefined;
    const cache = smapsCache;
    if (cache !== undefined) {
      rssNow = new LuaTable<number, number>();
      for (let i = 0; i < fresh.length; i++) {
        const m = fresh[i];
        const r = cache.rss.get(m.start);
        if (r !== undefined && cache.ends.get(m.start) === m.end && !(reuse && privateAnon(m))) rssNow.set(m.start, r);
        else {
          rssNow.set(m.start, residentBytes(m.start, m.end - m.start, onTick) ?? 0);
          changed++;
        }
        if (i % TICK_EVERY === TICK_EVERY - 1) onTick();
      }
    }
    const lj = locateLuajit(mem, ctx.maps.list);
    const known: KnownRange[] = [];
    for (const x of lj.ranges) known.push({ start: x.start, end: x.end, cls: "luajit" });
    const res = classify({
      list: fresh,
      rss: rssNow,
      mem,
      zones,
      known,
      resident: (a, len) => residentBytes(a, len, onTick),
      tick: onTick,
      topN: REGIONS_TOP_N,
      rssTotal: rss,
    });
    return { res, lj };
  };
  if (gcWasRunning) holdGc();
  let out: { res: ClassifyResult; lj: LjLocate } | undefined;
  let failure: unknown;
  for (const mem of [checked, checked, blind]) {
    const [ok, v] = pcall(attempt, mem);
    if (ok) {
      out = v as { res: ClassifyResult; lj: LjLocate };
      break;
    }
    failure = v;
    if (v !== VANISHED) break;
    skip(ctx, "regions_memory_vanished");
  }
  releaseGc();
  if (out === undefined) error(failure as string, 0);
  const { res, lj } = out;
  const ljt = res.byClass["luajit"];
  lastInfo = {
    luajit_bytes: ljt.bytes,
    luajit_rss_bytes: ljt.rss,
    luajit_method: lj.method,
    luajit_error: lj.error,
    smaps_ms: tSmaps,
    classify_ms: monoMs() - t0 - tSmaps,
    active_ms: monoMs() - t0 - yieldedMs,
    cpu_ms: cpuMs() - c0 - yieldedCpu,
    changed,
    smaps_read: !reuse,
  };
  return $multi(res.regions, res.explained);
}
