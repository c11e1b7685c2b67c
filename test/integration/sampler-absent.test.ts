/**
 * The agent without the native sampler (not built, or no compiler): everything
 * else works, and the sampler says why it is unavailable. The agent's Lua is
 * copied to a folder with no build/native next to it.
 */
import * as path from "path";
import { NoNativeNginx } from "../harness/nginx";

describe("agent without the native sampler library", () => {
  const ngx = new NoNativeNginx({ workers: 1 });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

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
