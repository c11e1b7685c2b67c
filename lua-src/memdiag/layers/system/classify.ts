import { Mapping, parseLine } from "../../safe/maps";
import { ShmZone } from "../shm/zones";
import { scanSmaps, textSource } from "./smaps";
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
export const TICK_EVERY = 8;
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
