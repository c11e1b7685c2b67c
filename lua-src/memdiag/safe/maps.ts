import * as ffi from "ffi";
import { cdef } from "../util/cdef";

cdef(`void *sbrk(intptr_t increment);`);

/** current program break (end of the brk heap): glibc's cached __curbrk, no syscall once set */
function curBrk(): number {
  return tonumber(ffi.cast("uintptr_t", ffi.C.sbrk(0)))!;
}

/**
 * The worker's address space as /proc/self/maps shows it, sorted, with a binary
 * search. Every pointer the agent follows is checked here first: a wrong pointer
 * dereferenced through FFI is a SIGSEGV that takes the worker and its connections down.
 */

/** Read-only: one Mapping is shared by every parse that saw its line (see Maps.load). */
export interface Mapping {
  readonly start: number;
  readonly end: number;
  readonly perms: string;
  readonly offset: number;
  readonly inode: number;
  readonly path: string;
  /** we may read it: 'r' permission and not a special or device mapping */
  readonly readable: boolean;
}

const LINE = "^(%x+)-(%x+) (%S+) (%x+) %S+ (%d+)[ \t]*(.*)$";

/** One line of /proc/<pid>/maps (or an smaps header), or undefined when it has another shape. */
export function parseLine(line: string): Mapping | undefined {
  const [s, e, perms, off, inode, path] = string.match(line, LINE);
  if (s === undefined) return undefined;
  return {
    start: tonumber(s, 16)!,
    end: tonumber(e, 16)!,
    perms: perms!,
    offset: tonumber(off, 16)!,
    inode: tonumber(inode)!,
    path: path!,
    readable: isReadable(perms!, path!),
  };
}

/** LuaJIT's table.clear (empties a table, keeping its memory), or a fresh table elsewhere */
const [clearOk, clearFn] = pcall(() => (_G as unknown as { require: (this: void, m: string) => unknown }).require("table.clear"));
function emptied<K extends AnyNotNil, V>(t: LuaTable<K, V>): LuaTable<K, V> {
  if (clearOk) {
    (clearFn as (this: void, t: unknown) => void)(t);
    return t;
  }
  return new LuaTable<K, V>();
}


let live: Maps | undefined;

export class Maps {
  /** replaced (never mutated) by a reload: a caller may keep a reference as a snapshot */
  public list: Mapping[] = [];
  private starts: number[] = [];
  private ends: number[] = [];
  private ok: boolean[] = [];
  public n = 0;
  /** this is the worker's own address space (Maps.self()), which invalidate()/reload can refresh */
  private isLive = false;
  /**
   * Other code ran since the mappings were read (a yield): anything but the brk heap
   * below the current break must be checked against a fresh read. See invalidate().
   */
  public stale = false;
  /** start of the brk heap ([heap]), 0 when there is none; its end is sbrk(0) now */
  private brkStart = 0;
  /** reads of /proc/self/maps (diagnostics: how often the lazy refresh had to read) */
  public static reads = 0;

  /** Parse maps text (the content of /proc/<pid>/maps). */
  static parse(text: string): Maps {
    const m = new Maps();
    m.load(text);
    return m;
  }

  /**
   * Mappings of the last parse by their line. The maps of a worker change a few lines at a
   * time (a segment grows, a chunk is mapped), and a collection parses them at least once, so
   * a line seen last time gives back its Mapping: string.sub of a line that still exists
   * returns the interned string without allocating. The whole parse allocated ~50 KB for
   * ~105 lines (a table and five strings a line, the text joined once more for the pattern)
   * and made garbage whose collection the worker paid inside the agent's slices.
   */
  private lines = new LuaTable<string, Mapping>();
  private spare = new LuaTable<string, Mapping>();

  private load(text: string): void {
    this.list = [];
    this.starts = [];
    this.ends = [];
    this.ok = [];
    this.n = 0;
    this.brkStart = 0;
    this.hitStart = 0;
    this.hitEnd = 0;
    const prev = this.lines;
    const cur = emptied(this.spare);
    const len = text.length;
    let pos = 1;
    while (pos <= len) {
      const [nl] = string.find(text, "\n", pos, true);
      const last = nl === undefined ? len : nl - 1;
      const line = string.sub(text, pos, last);
      const mp = prev.get(line) ?? parseLine(line);
      if (mp !== undefined) {
        cur.set(line, mp);
        this.add(mp);
      }
      pos = last + 2;
    }
    this.lines = cur;
    this.spare = prev;
    for (const mp of this.list) {
      if (mp.path === "[heap]" && mp.readable && string.sub(mp.perms, 1, 2) === "rw") {
        this.brkStart = mp.start;
        break;
      }
    }
  }

  /** From mappings parsed elsewhere (e.g. the header lines of /proc/self/smaps), sorted by start. */
  static fromList(list: Omit<Mapping, "readable">[]): Maps {
    const m = new Maps();
    for (const mp of list) m.add({ ...mp, readable: isReadable(mp.perms, mp.path) });
    return m;
  }

  /**
   * The worker's own mappings, read from /proc/self/maps; undefined with an error if
   * it cannot be read. Always the same object, refreshed in place: the parse is
   * skipped when the text is the same as last time (LuaJIT interns strings: equal
   * text is the same string, compared in O(1)), and a reload replaces the arrays
   * rather than mutating them, so a caller holding `list` keeps a consistent snapshot.
   */
  static self(mark?: (w: string) => void): LuaMultiReturn<[Maps | undefined, string | undefined]> {
    if (live === undefined) {
      live = new Maps();
      live.isLive = true;
    }
    const err = live.reload(mark);
    if (err !== undefined) return $multi(undefined, err);
    return $multi(live, undefined);
  }

  private lastText: string | undefined;
  /** diagnostics hook: told about every read (the deep scan marks them in its slice record) */
  public static onRead: ((this: void, what: string) => void) | undefined;

  private reload(mark?: (w: string) => void): string | undefined {
    if (Maps.onRead !== undefined) Maps.onRead("maps read");
    const [f, err] = io.open("/proc/self/maps", "r");
    if (!f) return `cannot open /proc/self/maps: ${err}`;
    const text = f.read("*a") as string | undefined;
    f.close();
    Maps.reads++;
    if (text === undefined) return "cannot read /proc/self/maps";
    if (mark) mark(text === this.lastText ? "maps same" : "maps changed");
    if (text !== this.lastText) {
      this.load(text);
      this.lastText = text;
    }
    this.stale = false;
    return undefined;
  }

  /**
   * Other code may have run (the caller yielded): mappings may have gone. Instead of
   * re-reading /proc/self/maps at once (~0.1-0.2 ms for ~100 mappings, more for
   * thousands, after every slice), the next check decides:
   *  - a range inside the brk heap below the current break (sbrk(0), no syscall) is
   *    mapped read-write: the brk heap only grows or shrinks at its top, and only
   *    through brk (glibc's main arena), so nothing below the break can be unmapped;
   *  - anything else makes the first check after the yield re-read the mappings.
   * So a slice that reads only the brk heap (the chunk walk, the reference scan of
   * small chunks and pools, pool blocks) never pays for the file, and one that reads
   * anything else pays at most once. Maps not read from this process (parse,
   * fromList) cannot be refreshed: invalidate() is a no-op for them.
   */
  /** the worker's own maps (if read yet) are stale: call after any yield */
  static invalidateSelf(): void {
    if (live !== undefined) live.invalidate();
  }

  isSelf(): boolean {
    return this.isLive;
  }

  invalidate(): void {
    if (!this.isLive) return;
    this.stale = true;
    this.hitStart = 0;
    this.hitEnd = 0;
  }

  /** re-read the mappings now if other code ran since they were read */
  ensureFresh(): void {
    if (this.stale) this.reload();
  }

  /** [brk start, current break), or [0, 0) when this process has no brk heap */
  brkHeap(): LuaMultiReturn<[number, number]> {
    if (this.brkStart === 0 || !this.isLive) return $multi(0, 0);
    return $multi(this.brkStart, curBrk());
  }

  private add(mp: Mapping): void {
    // /proc/self/maps is sorted already; keep the invariant the search relies on.
    if (this.n > 0 && mp.start < this.ends[this.n - 1]) return;
    this.list.push(mp);
    this.starts.push(mp.start);
    this.ends.push(mp.end);
    this.ok.push(mp.readable);
    this.n++;
  }

  /** Index (0-based) of the mapping that contains addr, or -1. */
  find(addr: number): number {
    if (this.stale) this.reload();
    const starts = this.starts;
    let lo = 0;
    let hi = this.n - 1;
    while (lo <= hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (starts[mid] <= addr) {
        if (addr < this.ends[mid]) return mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return -1;
  }

  /** last readable mapping a check succeeded in: walks hit the same heap mapping again and again */
  private hitStart = 0;
  private hitEnd = 0;

  /** True when [addr, addr+len) lies inside one readable mapping (consecutive [heap] lines count as one). */
  readable(addr: number, len: number): boolean {
    if (addr >= this.hitStart && addr + len <= this.hitEnd) return true;
    if (addr < 4096 || addr !== addr) return false;
    if (this.stale && this.brkStart !== 0 && addr >= this.brkStart && addr + len <= curBrk() && len >= 0) return true;
    const i = this.find(addr);
    if (i < 0 || !this.ok[i]) return false;
    if (addr + len <= this.ends[i]) {
      this.hitStart = this.starts[i];
      this.hitEnd = this.ends[i];
      return true;
    }
    return addr + len <= this.heapRunEnd(i);
  }

  /**
   * The brk heap can show as several consecutive [heap] lines (the kernel splits the VMA;
   * seen in OpenResty workers): one region, and an object may straddle a line boundary.
   * End of the run of contiguous readable [heap] lines from line i (its own end otherwise).
   */
  private heapRunEnd(i: number): number {
    let j = i;
    if (this.list[i].path === "[heap]") {
      while (j + 1 < this.n && this.ok[j + 1] && this.starts[j + 1] === this.ends[j] && this.list[j + 1].path === "[heap]") j++;
    }
    return this.ends[j];
  }

  /** End of the readable mapping containing addr, or 0: lets a walker check a whole range once. */
  readableEnd(addr: number): number {
    if (this.stale && this.brkStart !== 0 && addr >= this.brkStart) {
      const b = curBrk();
      if (addr < b) return b;
    }
    const i = this.find(addr);
    return i >= 0 && this.ok[i] ? this.heapRunEnd(i) : 0;
  }
}

function isReadable(perms: string, path: string): boolean {
  if (string.sub(perms, 1, 1) !== "r") return false;
  if (path === "[vvar]" || path === "[vsyscall]" || path === "[vvar_vclock]") return false;
  // Device mappings can fault or have side effects on read; nginx's shared zones are /dev/zero.
  if (string.sub(path, 1, 5) === "/dev/" && string.sub(path, 1, 9) !== "/dev/zero") return false;
  return true;
}
