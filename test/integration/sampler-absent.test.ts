/**
 * The agent without the native sampler (not built, or no compiler): everything
 * else works, and the sampler says why it is unavailable. The agent's Lua is
 * copied to a folder with no build/native next to it.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Nginx } from "../harness/nginx";
import { ROOT } from "../../scripts/config";

class NoNativeNginx extends Nginx {
  luaCopy = "";
  writeConf(): void {
    super.writeConf();
    if (!this.luaCopy) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-nonative-"));
      fs.chmodSync(dir, 0o755);
      this.luaCopy = path.join(dir, "lua");
      fs.cpSync(path.join(ROOT, "build", "lua"), this.luaCopy, { recursive: true });
    }
    const f = path.join(this.prefix, "conf", "memdiag.conf");
    const conf = fs.readFileSync(f, "utf8").split(path.join(ROOT, "build", "lua")).join(this.luaCopy);
    fs.writeFileSync(f, conf);
  }
}

describe("agent without the native sampler library", () => {
  const ngx = new NoNativeNginx({ workers: 1 });
  beforeAll(() => ngx.start());
  afterAll(async () => {
    await ngx.stop();
    if (ngx.luaCopy) fs.rmSync(path.dirname(ngx.luaCopy), { recursive: true, force: true });
  });

  test("status says unavailable with the path; arm and got fail with the reason; snapshots still work", async () => {
    const expected = path.join(path.dirname(ngx.luaCopy), "native", "libmemdiag_sampler.so");
    const s = await ngx.memdiag("?sampler=status");
    expect(s.status).toBe(200);
    expect(JSON.parse(s.body)).toMatchObject({ available: false, loaded: false, armed: false, lib: expected });
    for (const q of ["arm", "got"]) {
      const r = await ngx.memdiag(`?sampler=${q}`);
      expect(r.status).toBe(503);
      expect(JSON.parse(r.body).error).toMatch(/cannot load .*libmemdiag_sampler\.so.*npm run build:native/);
    }
    expect((await ngx.memdiag("?sampler=top")).status).toBe(409);
    const snaps = await ngx.snapshots();
    expect(snaps).toHaveLength(1);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });
});
