/**
 * Control-plane symbolisation of sampler frames from ELF symbol tables
 * (control-plane/src/elfsym.ts). Ground truth: nm and readelf on the same files,
 * and a real sampler answer from nginx with the leak fixture.
 */
import { execFileSync } from "child_process";
import { Nginx, httpGet } from "../harness/nginx";
import { LEAKY_LOCATIONS, LEAKY_SO, ensureSampler, leakyLoadModule } from "../harness/fixtures";
import { Symbolizer, lookupSymbol, readElf } from "../../control-plane/src/elfsym";
import { fetchFolded } from "../../control-plane/src/flame";

function buildId(file: string): string {
  return /Build ID: ([0-9a-f]+)/.exec(execFileSync("readelf", ["-n", file], { encoding: "utf8" }))![1];
}

/** nm -S function symbols: name -> [start, size] */
function nmFunctions(file: string, dynamic = false): Map<string, [number, number]> {
  const out = execFileSync("nm", dynamic ? ["-S", "-D", "--defined-only", file] : ["-S", "--defined-only", file], { encoding: "utf8" });
  const m = new Map<string, [number, number]>();
  for (const line of out.split("\n")) {
    const x = /^([0-9a-f]+) ([0-9a-f]+) [tTiW] (\S+)$/.exec(line);
    if (x) m.set(x[3], [parseInt(x[1], 16), parseInt(x[2], 16)]);
  }
  return m;
}

describe("ELF symbolisation of frames", () => {
  beforeAll(() => {
    leakyLoadModule();
  });

  test("the fixture .so (not stripped): .symtab with static functions, build-id = readelf's, every function = nm's", () => {
    const info = readElf(LEAKY_SO);
    expect(info.table).toBe("symtab");
    expect(info.buildId).toBe(buildId(LEAKY_SO));
    const nm = nmFunctions(LEAKY_SO);
    expect(nm.has("ngx_http_leaky_upstream_build_table")).toBe(true);
    for (const [name, [start, size]] of nm) {
      if (size === 0) continue;
      expect(lookupSymbol(info, start)?.symbol).toBe(name);
      expect(lookupSymbol(info, start + size - 1)?.name).toBe(`${name}+0x${(size - 1).toString(16)}`);
    }
  });

  test("the packaged nginx (stripped): .dynsym only; an address in a static function is not given a neighbour's name", () => {
    const info = readElf("/usr/sbin/nginx");
    expect(info.table).toBe("dynsym");
    expect(info.buildId).toBe(buildId("/usr/sbin/nginx"));
    const dyn = nmFunctions("/usr/sbin/nginx", true);
    const [start, size] = dyn.get("ngx_palloc")!;
    expect(lookupSymbol(info, start + 1)?.symbol).toBe("ngx_palloc");
    // gaps between exported functions (static code) resolve to nothing
    const sorted = [...dyn.values()].sort((a, b) => a[0] - b[0]);
    let gaps = 0;
    for (let i = 0; i + 1 < sorted.length && gaps < 20; i++) {
      const end = sorted[i][0] + sorted[i][1];
      if (sorted[i + 1][0] - end > 64) {
        expect(lookupSymbol(info, end + 16)).toBeUndefined();
        gaps++;
      }
    }
    expect(gaps).toBeGreaterThan(0);
    void size;
  });

  describe("frames from a running sampler", () => {
    const ngx = new Nginx({ workers: 1, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS });
    beforeAll(async () => {
      ensureSampler();
      await ngx.start();
    });
    afterAll(() => ngx.stop());

    test("the fixture's static helper gets its name from the module's .symtab; worker names are kept", async () => {
      expect((await ngx.memdiag("?sampler=arm&sampler_rate=1")).status).toBe(200);
      expect((await httpGet(ngx.appPort, "/leaky/update-leak?n=5")).status).toBe(200);
      const top = JSON.parse((await ngx.memdiag("?sampler=top&sampler_limit=100")).body);
      const p = top.paths.find((x: any) => x.fn === "malloc" && x.frames.some((f: any) => f.name?.startsWith("ngx_http_leaky_upstream_update+")));
      expect(p).toBeDefined();
      const sym = new Symbolizer();
      const labels = p.frames.map((f: any) => sym.label(f));
      const i = p.frames.findIndex((f: any) => f.name?.startsWith("ngx_http_leaky_upstream_update+"));
      expect(p.frames[i - 1].path).toBe(LEAKY_SO);
      expect(sym.resolve(p.frames[i - 1])).toMatchObject({ source: "symtab" });
      expect(labels[i - 1]).toMatch(/^ngx_http_leaky_upstream_build_table\+0x[0-9a-f]+$/);
      expect(labels[i]).toBe(p.frames[i].name);
      // file:line from the fixture's DWARF (built with -g): the ngx_palloc call of the static helper
      const src = require("fs").readFileSync(require("path").join(require("path").dirname(LEAKY_SO), "..", "ngx_http_leaky_upstream_module.c"), "utf8").split("\n");
      const line = src.findIndex((l: string) => /table = ngx_palloc\(pool, LEAKY_TABLE_SIZE\);/.test(l)) + 1;
      expect(line).toBeGreaterThan(0);
      const fl = sym.fileLines(p.frames);
      expect(fl[i - 1]).toBe(`ngx_http_leaky_upstream_module.c:${line}`);
      // stripped nginx without a debug file: no line
      const ngxFrame = p.frames.findIndex((f: any) => f.module === "nginx");
      expect(fl[ngxFrame]).toBeUndefined();
      // a frame whose build-id does not match the file is left alone
      expect(sym.resolve({ ...p.frames[i - 1], build_id: "00".repeat(20) })).toBeUndefined();
      // folded stacks for FlameGraph, fetched like the CLI does, the helper named, weights = the worker's est_bytes
      const folded = await fetchFolded(`http://127.0.0.1:${ngx.memdiagPort}`, undefined, true);
      const fline = folded.split("\n").find((l) => l.includes("ngx_http_leaky_upstream_build_table"));
      expect(fline).toMatch(/ngx_http_leaky_upstream_update\+0x[0-9a-f]+_\(ngx_http_leaky_upstream_module\.c:\d+\);ngx_http_leaky_upstream_build_table\+0x[0-9a-f]+_\(ngx_http_leaky_upstream_module\.c:\d+\);.*;malloc 1536000$/);
      await ngx.memdiag("?sampler=disarm");
    });
  });
});
