import { runLua } from "../harness/lua";

/**
 * layers/system/resident.ts in the luajit CLI: resident bytes of a fresh anonymous mapping equal the
 * pages the test touched itself (huge pages off for it, so a touch is one page), across
 * several batches, with the caller called between batches; a range that is not mapped gives
 * undefined instead of a fault.
 */
describe("residentBytes (mincore)", () => {
  test("counts exactly the pages touched, batch by batch, and refuses an unmapped range", () => {
    const r = runLua(`
      local ffi = require("ffi")
      pcall(ffi.cdef, [[
        void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
        int munmap(void *addr, size_t length);
        int madvise(void *addr, size_t length, int advice);
      ]])
      local R = require("memdiag.layers.system.resident")
      local MB = 1024 * 1024
      local len = 256 * MB -- 4 batches of 64 MB
      local p = ffi.C.mmap(nil, len, 3, 0x22, -1, 0) -- PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
      local base = tonumber(ffi.cast("uintptr_t", p))
      ffi.C.madvise(p, len, 15) -- MADV_NOHUGEPAGE: one touch, one page
      local b = ffi.cast("uint8_t *", p)
      local touched = 0
      for off = 0, len - 1, 4096 * 37 do b[off] = 1 touched = touched + 1 end
      local calls = 0
      local got = R.residentBytes(base, len, function() calls = calls + 1 end)
      local half = R.residentBytes(base, 128 * MB)
      ffi.C.munmap(p, len)
      local gone = R.residentBytes(base, len)
      return { got = got, want = touched * 4096, calls = calls, batches = len / (R.RESIDENT_BATCH_PAGES * 4096),
               half = half, wantHalf = math.ceil(128 * MB / (4096 * 37)) * 4096, gone = gone == nil }`);
    expect(r.got).toBe(r.want);
    expect(r.calls).toBe(r.batches - 1);
    expect(r.half).toBe(r.wantHalf);
    expect(r.gone).toBe(true);
  });
});
