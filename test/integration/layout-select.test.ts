/**
 * Layout selection and validation against a real nginx: the committed layout is
 * chosen by version + md5(ngx.config.nginx_configure()), validated against the live
 * cycle, and a deliberately corrupted copy is refused with the reason while the
 * worker keeps serving.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { execFileSync } from "child_process";
import { Nginx, httpGet, NGINX_BIN } from "../harness/nginx";
import { ROOT } from "../../scripts/config";
import { validateSnapshot } from "../../schema/validate";
import { PLATFORM } from "../harness/platform";

/** `nginx -V` of the binary under test. */
function binaryInfo(): { version: string; configure: string } {
  const text = execFileSync("sh", ["-c", `${NGINX_BIN} -V 2>&1`], { encoding: "utf8" });
  const version = PLATFORM.coreVersion;
  const line = text.split("\n").find((l) => l.startsWith("configure arguments:"))!;
  return { version, configure: line.slice("configure arguments:".length) };
}

const BIN = binaryInfo();
/** the committed layout for this machine: the one file for this nginx version */
const COMMITTED = fs.readdirSync(path.join(ROOT, "layouts")).filter((f) => f.startsWith(`${BIN.version}-`) && f.endsWith(".json"));
const LAYOUT_FILE = path.join(ROOT, "layouts", COMMITTED[0] ?? "missing.json");
const LAYOUT_ID = path.basename(LAYOUT_FILE, ".json");
const md5_12 = (s: string) => crypto.createHash("md5").update(s).digest("hex").slice(0, 12);

describe("struct layout: chosen for the running build and validated live", () => {
  const ngx = new Nginx({
    workers: 2,
    workerConnections: 768,
    memdiagLocations: `
    location = /t/configure {
        content_by_lua_block { ngx.print(ngx.config.nginx_configure()) }
    }`,
  });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test("the committed layout file exists for this machine's nginx", () => {
    expect(COMMITTED.length).toBe(1);
    const L = JSON.parse(fs.readFileSync(LAYOUT_FILE, "utf8"));
    expect(L.id).toBe(LAYOUT_ID);
    expect(L.structs.ngx_pool_t.fields["d.last"]).toBe(0);
  });

  test("its key is md5 of exactly what ngx.config.nginx_configure() returns in a worker", async () => {
    const r = await httpGet(ngx.memdiagPort, "/t/configure");
    expect(r.status).toBe(200);
    // NGX_CONFIGURE as compiled into lua-nginx-module: leading space, and for Debian's
    // dynamically loaded module the module's own configure line, not the binary's `nginx -V`
    // (where the module is built in, as on OpenResty and Tengine, the two are the same)
    expect(r.body.startsWith(" --")).toBe(true);
    if (PLATFORM.loadModules === "") expect(r.body).toBe(BIN.configure);
    expect(LAYOUT_ID).toBe(`${BIN.version}-${md5_12(r.body)}`);
    expect(JSON.parse(fs.readFileSync(LAYOUT_FILE, "utf8")).configure).toBe(r.body);
    expect(JSON.parse(fs.readFileSync(LAYOUT_FILE, "utf8")).binary_configure).toBe(BIN.configure);
  });

  test("every worker uses it, pools available, connection_n = worker_connections", async () => {
    const snaps = await ngx.snapshots();
    for (const s of snaps) {
      expect(validateSnapshot(s).error).toBeUndefined();
      expect(s.layout).toBe(LAYOUT_ID);
      expect(s.layout_error).toBeUndefined();
      expect(s.pools.available).toBe(true);
      expect(s.pools.connections.connection_n).toBe(768);
    }
    expect(ngx.errors()).toEqual([]);
  });
});

function corrupt(mutate: (L: any) => void): string {
  const L = JSON.parse(fs.readFileSync(LAYOUT_FILE, "utf8"));
  mutate(L);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-layout-"));
  fs.chmodSync(dir, 0o755);
  const f = path.join(dir, "corrupt.json");
  fs.writeFileSync(f, JSON.stringify(L));
  return f;
}

describe.each([
  ["cycle offsets shifted by 8", (L: any) => { for (const k of Object.keys(L.structs.ngx_cycle_t.fields)) L.structs.ngx_cycle_t.fields[k] += 8; }, /refused/],
  ["ngx_pool_t d.end and max swapped", (L: any) => { const f = L.structs.ngx_pool_t.fields; [f["d.end"], f.max] = [f.max, f["d.end"]]; }, /refused/],
  ["connection fd offset wrong", (L: any) => { L.structs.ngx_connection_t.fields.fd += 8; }, /refused/],
  ["sizeof(ngx_connection_t) wrong", (L: any) => { L.structs.ngx_connection_t.size += 16; }, /refused/],
  ["a required member missing", (L: any) => { delete L.structs.ngx_http_request_t.fields.uri; }, /lacks/],
])("a corrupted layout (%s) is refused and the worker keeps serving", (_name, mutate, reason) => {
  const file = corrupt(mutate);
  const ngx = new Nginx({ workers: 2, agent: { layout_file: file } });
  beforeAll(() => ngx.start());
  afterAll(async () => {
    await ngx.stop();
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });

  test("refused with the reason in every snapshot; requests still 200; no crash", async () => {
    const snaps = await ngx.snapshots(15000, 2);
    for (const s of snaps) {
      expect(validateSnapshot(s).error).toBeUndefined();
      expect(s.layout).toBeNull();
      expect(s.layout_error).toMatch(reason);
      expect(s.pools.available).toBe(false);
      expect(s.pools.error).toBe(s.layout_error);
      expect(s.shm).toEqual([]);
      // the other layers still work
      expect(s.system.rss_bytes).toBeGreaterThan(0);
      expect(s.luajit.gc_bytes).toBeGreaterThan(0);
    }
    for (let i = 0; i < 20; i++) expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    const log = ngx.errorLog();
    expect(log).not.toMatch(/exited on signal/);
    // exactly one clear line per worker, however many collections ran
    const lines = log.split("\n").filter((l) => l.includes("pool and connection layers unavailable"));
    expect(lines.length).toBe(2);
    expect(new Set(lines.map((l) => /\[error\] (\d+)#/.exec(l)![1])).size).toBe(2);
  });
});
