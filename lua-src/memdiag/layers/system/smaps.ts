import * as ffi from "ffi";
import { cdef } from "../../base/cdef";
import { jitLib } from "../../base/nojit";

// once per classification, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

/**
 * The Rss of every mapping from /proc/<pid>/smaps, read into one fixed C buffer and parsed
 * there: only the header's start and end, the Rss: value and the record's end (the VmFlags:
 * line) are looked at, and no Lua string is made of the text.
 *
 * Why: smaps is ~1.3 KB per mapping (~140 KB for an idle worker). Read as Lua strings (16 KB
 * pieces, joined, then matched), one read allocated ~250 KB of Lua memory, at every region
 * classification (every regions_every_s): the largest share of the agent's garbage, whose
 * collection the worker pays inside the agent's slices and the application's requests. Here a
 * read allocates a few bytes per system call and per record (64-bit results of the C calls
 * come back boxed) plus the two result tables.
 *
 * The buffer is a fixed SMAPS_BUF: records are parsed as soon as they are complete and the
 * rest is moved to its front, so a worker with thousands of mappings needs no more memory.
 * The C functions take and return addresses as integers (asm-renamed declarations), so no
 * pointer cdata is made per call.
 */
cdef(`int memdiag_sm_open(const char *path, int flags) __asm__("open");`);
cdef(`long memdiag_sm_read(int fd, uintptr_t buf, size_t n) __asm__("read");`);
cdef(`int memdiag_sm_close(int fd) __asm__("close");`);
cdef(`uintptr_t memdiag_sm_memchr(uintptr_t s, int c, size_t n) __asm__("memchr");`);
cdef(`uintptr_t memdiag_sm_memmem(uintptr_t hay, size_t hn, const char *needle, size_t nn) __asm__("memmem");`);
cdef(`uintptr_t memdiag_sm_memmove(uintptr_t dst, uintptr_t src, size_t n) __asm__("memmove");`);
cdef(`void *memdiag_sm_memcpy(uintptr_t dst, const char *src, size_t n) __asm__("memcpy");`);

const C = ffi.C;
const smOpen = C.memdiag_sm_open;
const smRead = C.memdiag_sm_read;
const smClose = C.memdiag_sm_close;
const memchr = C.memdiag_sm_memchr;
const memmem = C.memdiag_sm_memmem;
const memmove = C.memdiag_sm_memmove;
const memcpy = C.memdiag_sm_memcpy;

const O_RDONLY_CLOEXEC = 0x80000;
/** one read(): the kernel walks the page tables of the mappings it covers, so the caller ticks between reads */
export const SMAPS_CHUNK = 16384;
/** the buffer: a read plus the unparsed end of the last one (a record is ~1.3 KB) */
const SMAPS_BUF = 4 * SMAPS_CHUNK;
const bufCdata = ffi.new("uint8_t[?]", SMAPS_BUF + 8);
/** exported so the module table anchors it: the code uses its address, a number the GC does not see */
export const smapsBufAnchor = bufCdata;
const base = tonumber(ffi.cast("uintptr_t", bufCdata))!;
const u8 = ffi.cast("const uint8_t *", 0);
/** the buffer is this module's: a second reader (another coroutine, during a yield) must not share it */
let busy = false;

/** bytes appended at `dst` (at most `max`), 0 at the end, -1 on error */
export type SmapsSource = (this: void, dst: number, max: number) => number;

function hexAt(a: number, stop: number): LuaMultiReturn<[number, number]> {
  let v = 0;
  let i = a;
  for (; i < a + 17; i++) {
    const c = u8[i];
    if (c >= 48 && c <= 57) v = v * 16 + (c - 48);
    else if (c >= 97 && c <= 102) v = v * 16 + (c - 87);
    else break;
  }
  if (i === a || u8[i] !== stop) return $multi(-1, i);
  return $multi(v, i);
}

/** the reason when /proc/self/smaps cannot be opened or read */
export const UNREADABLE = "smaps unreadable";

/** what a read gives: every record's start → Rss bytes, and start → end */
export interface SmapsRss {
  rss: LuaTable<number, number>;
  ends: LuaTable<number, number>;
}

/**
 * Every record's Rss from a source of smaps text, or a reason when the text does not have the
 * expected shape (a record without Rss:, a kernel without VmFlags:, a record larger than the
 * buffer). `onTick` runs between reads. `onHeader`, when given, gets each record's header line
 * (tests: the full mapping).
 */
export function scanSmaps(
  source: SmapsSource,
  onTick?: (this: void) => void,
  onHeader?: (this: void, line: string) => void,
): SmapsRss | string {
  if (busy) return "smaps read already in progress";
  busy = true;
  const [ok, v] = pcall(scan, source, onTick, onHeader);
  busy = false;
  return ok ? (v as SmapsRss | string) : tostring(v);
}

function scan(
  this: void,
  source: SmapsSource,
  onTick: ((this: void) => void) | undefined,
  onHeader: ((this: void, line: string) => void) | undefined,
): SmapsRss | string {
  const rss = new LuaTable<number, number>();
  const ends = new LuaTable<number, number>();
  let fill = 0;
  let eof = false;
  while (!eof) {
    const got = source(base + fill, Math.min(SMAPS_CHUNK, SMAPS_BUF - fill));
    if (got < 0) return UNREADABLE;
    if (got === 0) eof = true;
    fill += got;
    let p = 0;
    while (p < fill) {
      const v = tonumber(memmem(base + p, fill - p, "\nVmFlags:", 9))!;
      if (v === 0) break;
      const e = tonumber(memchr(v + 1, 10, base + fill - v - 1))!;
      if (e === 0) break;
      const rec = base + p;
      const [start, dash] = hexAt(rec, 45); // '-'
      const [end] = hexAt(dash + 1, 32); // ' '
      if (start < 0 || end < 0) return "smaps header unparsable";
      const r = tonumber(memmem(rec, v - rec, "\nRss:", 5))!;
      if (r === 0) return "smaps record without Rss:";
      let i = r + 5;
      while (u8[i] === 32) i++;
      let kb = 0;
      const d0 = i;
      for (; u8[i] >= 48 && u8[i] <= 57; i++) kb = kb * 10 + (u8[i] - 48);
      if (i === d0) return "smaps Rss: without a number";
      rss.set(start, kb * 1024);
      ends.set(start, end);
      if (onHeader !== undefined) {
        const nl = tonumber(memchr(rec, 10, v - rec + 1))!;
        onHeader(ffi.string(ffi.cast("const char *", rec), nl - rec));
      }
      p = e + 1 - base;
    }
    if (p > 0) {
      memmove(base, base + p, fill - p);
      fill -= p;
    } else if (fill === SMAPS_BUF) return "smaps record larger than the buffer";
    if (!eof && onTick !== undefined) onTick();
  }
  if (fill > 0) return "smaps ends inside a record (no VmFlags:)";
  return { rss, ends };
}

/** /proc/self/smaps through read(2) */
export function readSelfSmaps(onTick?: (this: void) => void): SmapsRss | string {
  const fd = smOpen("/proc/self/smaps", O_RDONLY_CLOEXEC);
  if (fd < 0) return UNREADABLE;
  const res = scanSmaps((dst, max) => tonumber(smRead(fd, dst, max))!, onTick);
  smClose(fd);
  return res;
}

/** smaps text held in a Lua string, as a source (tests, and smaps of other processes) */
export function textSource(text: string): SmapsSource {
  let pos = 0;
  return (dst, max) => {
    const n = Math.min(max, text.length - pos);
    if (n <= 0) return 0;
    memcpy(dst, string.sub(text, pos + 1, pos + n), n);
    pos += n;
    return n;
  };
}
