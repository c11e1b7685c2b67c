/**
 * The worker's address space as /proc/self/maps shows it, sorted, with a binary
 * search. Every pointer the agent follows is checked here first: a wrong pointer
 * dereferenced through FFI is a SIGSEGV that takes the worker and its connections down.
 */

export interface Mapping {
  start: number;
  end: number;
  perms: string;
  offset: number;
  inode: number;
  path: string;
  /** we may read it: 'r' permission and not a special or device mapping */
  readable: boolean;
}

/** the last /proc/self/maps text Maps.self() parsed, and the result */
let lastText: string | undefined;
let lastMaps: Maps | undefined;

export class Maps {
  public readonly list: Mapping[] = [];
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private readonly ok: boolean[] = [];
  public n = 0;

  /** Parse maps text (the content of /proc/<pid>/maps). */
  static parse(text: string): Maps {
    const m = new Maps();
    // anchored at line starts: an unanchored %x+ is tried at every hex digit of the text (3x slower)
    for (const [s, e, perms, off, inode, path] of string.gmatch(
      "\n" + text,
      "\n(%x+)-(%x+) (%S+) (%x+) %S+ (%d+)[ \t]*([^\n]*)",
    )) {
      m.add({
        start: tonumber(s, 16)!,
        end: tonumber(e, 16)!,
        perms,
        offset: tonumber(off, 16)!,
        inode: tonumber(inode)!,
        path,
        readable: isReadable(perms, path),
      });
    }
    return m;
  }

  /** From mappings parsed elsewhere (e.g. the header lines of /proc/self/smaps), sorted by start. */
  static fromList(list: Omit<Mapping, "readable">[]): Maps {
    const m = new Maps();
    for (const mp of list) m.add({ ...mp, readable: isReadable(mp.perms, mp.path) });
    return m;
  }

  /**
   * Read and parse /proc/self/maps; undefined with an error if it cannot be read.
   * The file is read every time (the address space may have changed), but parsing is
   * skipped when the text is the same as last time (LuaJIT interns strings: equal
   * text is the same string, compared in O(1)): the last result is returned again.
   * Sliced walks re-read maps after every yield; the parse (a table per mapping) was
   * most of that cost and of the garbage the scan leaves. A Maps is never mutated
   * after parsing (apart from its lookup cache), so sharing it is safe.
   */
  static self(): LuaMultiReturn<[Maps | undefined, string | undefined]> {
    const [f, err] = io.open("/proc/self/maps", "r");
    if (!f) return $multi(undefined, `cannot open /proc/self/maps: ${err}`);
    const text = f.read("*a") as string | undefined;
    f.close();
    if (text === undefined) return $multi(undefined, "cannot read /proc/self/maps");
    if (text === lastText && lastMaps !== undefined) return $multi(lastMaps, undefined);
    const m = Maps.parse(text);
    lastText = text;
    lastMaps = m;
    return $multi(m, undefined);
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

  /** True when [addr, addr+len) lies inside one readable mapping. */
  readable(addr: number, len: number): boolean {
    if (addr >= this.hitStart && addr + len <= this.hitEnd) return true;
    if (addr < 4096 || addr !== addr) return false;
    const i = this.find(addr);
    if (i >= 0 && this.ok[i] && addr + len <= this.ends[i]) {
      this.hitStart = this.starts[i];
      this.hitEnd = this.ends[i];
      return true;
    }
    return false;
  }

  /** End of the readable mapping containing addr, or 0: lets a walker check a whole range once. */
  readableEnd(addr: number): number {
    const i = this.find(addr);
    return i >= 0 && this.ok[i] ? this.ends[i] : 0;
  }
}

function isReadable(perms: string, path: string): boolean {
  if (string.sub(perms, 1, 1) !== "r") return false;
  if (path === "[vvar]" || path === "[vsyscall]" || path === "[vvar_vclock]") return false;
  // Device mappings can fault or have side effects on read; nginx's shared zones are /dev/zero.
  if (string.sub(path, 1, 5) === "/dev/" && string.sub(path, 1, 9) !== "/dev/zero") return false;
  return true;
}
