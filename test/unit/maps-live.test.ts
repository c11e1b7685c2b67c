import { runLua } from "../harness/lua";

/**
 * Maps.self() in a live process (the luajit CLI): after invalidate() (what a yield
 * does) nothing is trusted from the old read but the brk heap below the current
 * break; a region unmapped while "yielded" is seen as gone. Ground truth: mmap and
 * munmap done by the test itself, sbrk(0) read by the test.
 */
const PRE = `
local ffi = require("ffi")
pcall(ffi.cdef, [[
  void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
  int munmap(void *addr, size_t length);
  void *malloc(size_t size);
  void *sbrk(intptr_t increment);
]])
local Maps = require("memdiag.safe.maps").Maps
local function addr(p) return tonumber(ffi.cast("uintptr_t", p)) end
`;

describe("live maps: lazy re-read after a yield", () => {
  test("a region unmapped after the read is unreadable once invalidated; the brk heap needs no re-read", () => {
    const r = runLua(`${PRE}
      -- PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
      local p = ffi.C.mmap(nil, 65536, 3, 0x22, -1, 0)
      local a = addr(p)
      local small = addr(ffi.C.malloc(64))      -- a small malloc lands in the brk heap
      local brk = addr(ffi.C.sbrk(0))
      local m = Maps:self()
      local before = m:readable(a, 65536)
      local reads0 = Maps.reads
      ffi.C.munmap(p, 65536)
      -- without invalidate() the old read still says readable (what the lazy scheme must never rely on)
      local staleSays = m:readable(a, 65536)
      m:invalidate()
      local inBrk = m:readable(small, 64)
      local readsAfterBrk = Maps.reads - reads0
      local after = m:readable(a, 65536)
      local readsAfterGone = Maps.reads - reads0
      -- after the re-read the maps are current: a second check reads nothing
      local again = m:readable(a, 16)
      local readsAgain = Maps.reads - reads0
      local bs, be = m:brkHeap()
      return { before = before, staleSays = staleSays, inBrk = inBrk, readsAfterBrk = readsAfterBrk,
               after = after, readsAfterGone = readsAfterGone, again = again, readsAgain = readsAgain,
               smallInBrk = small >= bs and small < be, brkEnd = be, brk = brk, same = Maps:self() == m }`);
    expect(r.before).toBe(true);
    expect(r.staleSays).toBe(true);
    expect(r.smallInBrk).toBe(true);
    expect(r.brkEnd).toBe(r.brk);
    expect(r.inBrk).toBe(true);
    expect(r.readsAfterBrk).toBe(0); // the brk heap was checked against sbrk(0), not the file
    expect(r.after).toBe(false); // gone: the stale read did not let it through
    expect(r.readsAfterGone).toBe(1);
    expect(r.again).toBe(false);
    expect(r.readsAgain).toBe(1);
    expect(r.same).toBe(true);
  });

  test("the brk heap shrinking below an address makes it unreadable without a re-read", () => {
    const r = runLua(`${PRE}
      local m = Maps:self()
      local top = addr(ffi.C.sbrk(0))
      -- grow the break by 1 MB by hand, read maps, shrink it back
      ffi.C.sbrk(1048576)
      m = Maps:self()
      local grown = m:readable(top + 4096, 4096)
      ffi.C.sbrk(-1048576)
      m:invalidate()
      local reads0 = Maps.reads
      local afterShrink = m:readable(top + 4096, 4096)
      return { grown = grown, afterShrink = afterShrink, reads = Maps.reads - reads0 }`);
    expect(r.grown).toBe(true);
    expect(r.afterShrink).toBe(false);
    // outside the brk heap now: decided by a fresh read, which no longer shows those pages
    expect(r.reads).toBe(1);
  });

  test("maps parsed from text are not live: invalidate() changes nothing", () => {
    const r = runLua(`${PRE}
      local m = Maps:parse("00400000-00500000 r--p 00000000 00:00 0 \\n")
      m:invalidate()
      return { stale = m.stale, ok = m:readable(4194304, 16), self = m:isSelf() }`);
    expect(r).toEqual({ stale: false, ok: true, self: false });
  });
});
