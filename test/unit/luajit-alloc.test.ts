import { runLua } from "../harness/lua";

/**
 * layers/luajit/alloc.ts validating a malloc_state whose top chunk moves between the validator's reads,
 * as the agent's own allocations make LuaJIT's allocator do. The allocator is synthetic: one
 * 64 KB segment in memory the test maps, laid out as lj_alloc (dlmalloc) lays out its first
 * segment, read through the agent's real reader (checkedMem, kernel copies). At the moment the
 * validator reads the top chunk's header the test changes the memory the way the allocator does.
 * Why synthetic: a live LuaJIT's top only moves while its heap grows from the top, which a test
 * cannot arrange reliably (in the CLI the top is soon exhausted and new memory is prepended below).
 * A live check of the same path runs in every worker (test/integration/regions.test.ts).
 */
type Move = "none" | "carve" | "grow" | "chase" | "tiny" | "long" | "far";

function validate(move: Move): { ok: boolean; err: string | null; topReads: number; segs: number } {
  return runLua(`
    local ffi = require("ffi")
    pcall(ffi.cdef, "void *mmap(void *, size_t, int, int, int, long);")
    local A = require("memdiag.layers.luajit.alloc")
    local Maps = require("memdiag.safe.maps").Maps
    local R = require("memdiag.layers.system.classify")
    local SEG = 65536
    local p = ffi.C.mmap(nil, SEG, 3, 0x22, -1, 0)   -- PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    local base = tonumber(ffi.cast("uintptr_t", p))
    local w = ffi.cast("uint64_t *", p)
    local function put(addr, v) w[(addr - base) / 8] = v end
    local ms = base + 16
    put(ms - 8, 880 + 3)                       -- the malloc_state chunk: 880 bytes, in use
    put(ms + 840, base); put(ms + 848, SEG); put(ms + 856, 0)   -- seg: { base, size, next }
    put(base + 880 + 8, 144 + 3)               -- an in-use chunk below the top
    local top = base + 1024
    local topsize = SEG - 64 - 1024            -- the top chunk ends 64 bytes (the footer) short of the segment
    local function setTop(t, size) top, topsize = t, size; put(ms + 32, t); put(ms + 16, size); put(t + 8, size + 1) end
    setTop(top, topsize)
    if ${JSON.stringify(move)} == "far" then put(ms + 16, topsize - 4096); put(top + 8, topsize - 4096 + 1) end

    local maps = Maps:fromList((R.parseSmaps(io.open("/proc/self/smaps"):read("*a"))))
    local inner = require("memdiag.safe.probe").checkedMem(function() return maps end)
    local top0, moved, topReads, topRead = top, false, 0, nil
    -- the range of the reader's last kernel copy, as checkedMem makes them (64 bytes .. 1 KB)
    local clo, chi, copies = 0, 0, 0
    local mem = {
      readable = function(a, n)
        if ${JSON.stringify(move)} == "chase" and not (a >= clo and a + n <= chi) then
          -- a kernel copy: in the agent, an interpreted FFI call that boxes its 64-bit result,
          -- one 32-byte chunk carved from the top after each copy
          clo, chi, copies = a, a + math.min(math.max(n, 64), 1024), copies + 1
          if a == topRead and not moved then
            -- and 200 allocations came between the locator's read of the top and its walk
            moved = true
            for i = 1, 200 do put(top + 8, 32 + 3); setTop(top + 32, topsize - 32) end
          end
          local ok = inner.readable(a, n)
          put(top + 8, 32 + 3); setTop(top + 32, topsize - 32)
          return ok
        end
        if a == top0 and not moved then
          moved = true
          local m = ${JSON.stringify(move)}
          if m == "carve" then
            -- malloc of 48 bytes from the top: an in-use chunk where the top was, the top above it
            put(top0 + 8, 48 + 3)
            setTop(top0 + 48, topsize - 48)
          elseif m == "grow" then
            -- the chunk below the top grows in place by 256 bytes: the old top is inside it
            put(base + 880 + 8, 144 + 256 + 3)
            put(top0 + 8, 0x4141414141)          -- its payload
            setTop(top0 + 256, topsize - 256)
          end
        end
        return inner.readable(a, n)
      end,
      u64 = function(a)
        local v = inner.u64(a)
        if a == ms + 32 then topReads, topRead = topReads + 1, v end
        local m = ${JSON.stringify(move)}
        -- headers no top chunk has: smaller than any chunk, or reaching past the top's end
        if a == top0 + 8 and m == "tiny" then return 8 + 1 end
        if a == top0 + 8 and m == "long" then return topsize + 4096 + 1 end
        return v
      end,
    }
    local segs, err = A.allocatorSegments(mem, ms)
    -- the chase happened: the top ran 200+ chunks ahead and the walk needed several copies
    if ${JSON.stringify(move)} == "chase" then assert(top - top0 > 200 * 32 and copies >= 6, "no chase") end
    return { ok = segs ~= nil and #segs == 1 and segs[1].start == base and segs[1]["end"] == base + SEG,
             err = err or NULL, topReads = topReads, segs = segs and #segs or 0 }`);
}

describe("luajit/alloc allocatorSegments: the top chunk", () => {
  test("a still top is accepted at the first read", () => {
    expect(validate("none")).toEqual({ ok: true, err: null, topReads: 1, segs: 1 });
  });

  test("a top carved from between the reads is followed to its end at the first read", () => {
    // before topReached this was refused: "top chunk size != topsize" at every read
    expect(validate("carve")).toEqual({ ok: true, err: null, topReads: 1, segs: 1 });
  });

  test("a top swallowed by the chunk below growing in place is found by a second read", () => {
    expect(validate("grow")).toEqual({ ok: true, err: null, topReads: 2, segs: 1 });
  });

  test("a top that keeps moving while the walk follows it (one carve per copy) is caught up with", () => {
    // copying one line per header, the walk gained one chunk per copy on a top 200 chunks ahead,
    // and gave up at its bound: "top chunk not reached"
    expect(validate("chase")).toEqual({ ok: true, err: null, topReads: 1, segs: 1 });
  });

  test("a top header smaller than any chunk is refused with a reason, after three reads", () => {
    expect(validate("tiny")).toEqual({ ok: false, err: "top chunk size != topsize", topReads: 3, segs: 0 });
  });

  test("a top header reaching past the top's end is refused with a reason", () => {
    expect(validate("long")).toEqual({ ok: false, err: "top chunk size != topsize", topReads: 3, segs: 0 });
  });

  test("a top ending far short of its segment is refused with a reason", () => {
    expect(validate("far")).toEqual({ ok: false, err: "top chunk does not end its segment", topReads: 3, segs: 0 });
  });
});
