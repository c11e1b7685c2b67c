/**
 * The agent and the application's JIT: an application's hot loops keep their traces while the
 * agent runs, deep scans included, and the agent's own share of the VM's machine code is
 * measured. Ground truth: LuaJIT's own trace registry (jit.util.traceinfo / tracemc) and its
 * trace events (jit.attach), read by test instrumentation loaded before the workers fork
 * (test/fixtures/jit-probe), not by the agent.
 */
import * as fs from "fs";
import * as path from "path";
import { Nginx, httpGet } from "../harness/nginx";
import { ROOT } from "../../scripts/config";
import { PLATFORM } from "../harness/platform";

const PROBE_DIR = path.join(ROOT, "test/fixtures/jit-probe");
const SCANS = 12;

/** The application: a few hot loops of the usual kinds (arithmetic, strings, tables), in a module of its own. */
const APP = `local M = {}
function M.run()
  local s, t = 0, {}
  for i = 1, 200000 do s = s + (i % 7) * 3 end
  for i = 1, 20000 do t[#t + 1] = string.format("%d:%s", i, "k") end
  local n = 0
  for _, v in ipairs(t) do n = n + #v end
  return s + n
end
return M
`;

describe(`JIT footprint on ${PLATFORM.name}: the application keeps its traces`, () => {
  const ngx = new Nginx({
    workers: 1,
    http: `
  lua_package_path "${PROBE_DIR}/?.lua;$prefix/lua/?.lua;;";
  init_by_lua_block { require("memdiag_test_jitprobe").attach() }`,
    appLocations: `
    location = /app { content_by_lua_block { ngx.say(require("memdiag_test_app").run()) } }`,
    memdiagLocations: `
    location = /t/jit {
        content_by_lua_block { ngx.say(require("cjson").encode(require("memdiag_test_jitprobe").report("memdiag_test_app"))) }
    }`,
  });
  beforeAll(async () => {
    await ngx.start();
    fs.mkdirSync(path.join(ngx.prefix, "lua"), { recursive: true });
    fs.writeFileSync(path.join(ngx.prefix, "lua", "memdiag_test_app.lua"), APP);
    await ngx.snapshots();
  });
  afterAll(() => ngx.stop());

  const report = async () => JSON.parse((await httpGet(ngx.memdiagPort, "/t/jit")).body);

  test(`${SCANS} deep scans and a collection every second: the application's traces stay, no flush, no mcode failure`, async () => {
    for (let i = 0; i < 5; i++) expect((await httpGet(ngx.appPort, "/app")).status).toBe(200);
    const before = await report();
    expect(before.app.traces).toBeGreaterThan(0);
    for (let i = 0; i < SCANS; i++) {
      const r = await ngx.memdiag("?deep=1");
      expect(r.status).toBe(200);
      expect((await httpGet(ngx.appPort, "/app")).status).toBe(200);
    }
    const after = await report();
    // every trace the application had is still there, at the same machine-code address
    for (const [tr, addr] of Object.entries(before.app_traces)) expect(after.app_traces[tr]).toBe(addr);
    expect(after.flushes).toBe(0);
    expect(after.mcode_aborts).toBe(0);
    expect(ngx.errorLog()).not.toMatch(/mcode/);
    expect(ngx.errors()).toEqual([]);
    console.log(
      `jit footprint (${PLATFORM.name}, after ${SCANS} deep scans): agent ${after.memdiag.traces} traces, ${after.memdiag.mcode_bytes} B of machine code; ` +
        `application ${after.app.traces} traces, ${after.app.mcode_bytes} B; other ${after.other.traces} traces, ${after.other.mcode_bytes} B`,
    );
  });
});
