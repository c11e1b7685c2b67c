/**
 * The sampler's riskiest unwind: a C library called through the FFI from
 * JIT-compiled Lua allocates while the sampler is armed at rate 1, so every
 * malloc is backtraced from inside that library into LuaJIT trace frames
 * (which carry no or LuaJIT-registered unwind info). Tail calls return from
 * the hook straight into a trace; varying recursion depths defeat the stack
 * cache so full unwinds run. The worker must survive, frees must match, and
 * the kept allocations must be counted exactly on their own path.
 * Ground truth: the library is ours (test/fixtures/ffi-alloc), the counts and
 * sizes are the test's own.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Nginx, httpGet } from "../harness/nginx";
import { ensureSampler, samplerCall as sampler } from "../harness/fixtures";
import { ROOT } from "../../control-plane/src/config-file";

const KEEP = 300;
const KEEP_SIZE = 777;

describe("sampler armed while JIT-compiled Lua calls an allocating C library through the FFI", () => {
  let dir = "";
  let lib = "";
  // MEMDIAG_CORE_DIR=/dir: the worker dumps core there if it dies (gdb /usr/sbin/nginx /dir/core)
  const core = process.env.MEMDIAG_CORE_DIR;
  const opts = { workers: 1, appLocations: "", main: core ? `worker_rlimit_core 2g; working_directory ${core};` : undefined };
  const ngx = new Nginx(opts);

  beforeAll(async () => {
    ensureSampler();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-ffi-"));
    fs.chmodSync(dir, 0o755);
    lib = path.join(dir, "libmd_ffi_alloc.so");
    // -z now: the GOT holds malloc/free before arming, as in nginx's own objects
    execFileSync("cc", ["-O2", "-g", "-shared", "-fPIC", "-Wl,-z,now", "-o", lib, path.join(ROOT, "test/fixtures/ffi-alloc/ffi_alloc.c")]);
    fs.chmodSync(lib, 0o755);
    opts.appLocations = `
    location = /ffi {
      content_by_lua_block {
        local ffi = require "ffi"
        if not _G.__md_ffi then
          pcall(ffi.cdef, "void *md_ffi_alloc_tail(size_t); void *md_ffi_alloc_keep(size_t); void *md_ffi_alloc_deep(int, size_t); void md_ffi_free(void *);")
          _G.__md_ffi = ffi.load("${lib}")
          _G.__md_kept = {}
        end
        local L = _G.__md_ffi
        local op, n = ngx.var.arg_op, tonumber(ngx.var.arg_n) or 0
        if op == "tail" then
          for i = 1, n do L.md_ffi_free(L.md_ffi_alloc_tail(16 + i % 400)) end
        elseif op == "deep" then
          for i = 1, n do L.md_ffi_free(L.md_ffi_alloc_deep(i % 9, 32 + i % 300)) end
        elseif op == "keep" then
          local kept = _G.__md_kept
          for i = 1, n do kept[#kept + 1] = L.md_ffi_alloc_keep(${KEEP_SIZE}) end
        elseif op == "release" then
          for _, p in ipairs(_G.__md_kept) do L.md_ffi_free(p) end
          _G.__md_kept = {}
        end
        -- traces that exist now: the loops above ran as machine code, not in the interpreter
        local tu, traces = require "jit.util", 0
        for t = 1, 4000 do if tu.traceinfo(t) then traces = traces + 1 end end
        ngx.say(require("cjson").encode({ op = op, n = n, jit = jit.status() and true or false, traces = traces }))
      }
    }`;
    await ngx.start();
  });
  afterAll(async () => {
    await ngx.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("rate 1: no crash, every library allocation's free matched, kept ones exact on the library's path", async () => {
    const [pid] = ngx.workerPids();
    // a dead worker shows up as a hung-up socket: say why, from the error log
    const call = async (q: string) => {
      const r = await httpGet(ngx.appPort, `/ffi?${q}`, 60000).catch(async (e) => {
        await new Promise((res) => setTimeout(res, 500));
        throw new Error(`/ffi?${q}: ${e}\n${ngx.errorLog().slice(-1500)}`);
      });
      expect(r.status).toBe(200);
      return JSON.parse(r.body);
    };
    expect((await call("op=load")).jit).toBe(true);
    // the library is loaded before arming, so its GOT is among the patched objects
    const a = await sampler(ngx, "arm&sampler_rate=1");
    expect(a.patched_objects.map((o: any) => o.name)).toContain(lib);
    const s0 = await sampler(ngx, "status");

    let total = 0;
    for (let r = 0; r < 5; r++) {
      await call("op=tail&n=20000");
      await call("op=deep&n=5000");
      total += 25000;
    }
    const k = await call(`op=keep&n=${KEEP}`);
    expect(k.traces).toBeGreaterThan(0);

    const st = await sampler(ngx, "status");
    expect(st.drops).toEqual({ table_full: 0, paths_full: 0 });
    // every library malloc recorded (rate 1) and every library free matched
    expect(st.sampled - s0.sampled).toBeGreaterThanOrEqual(total + KEEP);
    expect(st.frees_matched - s0.frees_matched).toBeGreaterThanOrEqual(total);
    expect(st.unwinds).toBeGreaterThan(0);

    const top = await sampler(ngx, "top&sampler_limit=500");
    const kept = top.paths.filter((p: any) => p.fn === "malloc" && p.frames.some((f: any) => (f.name ?? "").startsWith("md_ffi_alloc_keep+")));
    expect(kept.reduce((s: number, p: any) => s + p.records, 0)).toBe(KEEP);
    expect(kept.reduce((s: number, p: any) => s + p.record_bytes, 0)).toBe(KEEP * KEEP_SIZE);
    // nothing of the freed loops is left on the library's paths
    const loops = top.paths.filter((p: any) => p.frames.some((f: any) => /^md_ffi_alloc_(tail|deep)\+/.test(f.name ?? "")));
    expect(loops.reduce((s: number, p: any) => s + p.records, 0)).toBe(0);

    await call("op=release");
    const d = await sampler(ngx, "disarm");
    expect(d.restore_mismatch).toBe(0);
    expect(ngx.workerPids()).toEqual([pid]);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });
});
