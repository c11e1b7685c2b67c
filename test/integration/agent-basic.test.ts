import * as fs from "fs";
import { Nginx, procStatus } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";
import { PLATFORM } from "../harness/platform";

describe("agent in a real nginx: one include line, every worker answers", () => {
  const ngx = new Nginx({ workers: 2 });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test("every worker publishes a schema-valid snapshot", async () => {
    const snaps = await ngx.snapshots();
    expect(snaps.map((s) => s.pid)).toEqual(ngx.workerPids());
    for (const s of snaps) {
      const v = validateSnapshot(s);
      expect(v.error).toBeUndefined();
      expect(s.nginx_version).toBe(PLATFORM.coreVersion);
    }
  });

  test("rss_bytes agrees with /proc/<pid>/status read by the test around the collection", async () => {
    // the truth is read just before and just after a fresh collection (RSS moves a little
    // while the collection runs: it allocates, the JIT compiles); an older stored snapshot
    // would be compared with a worker that has grown since
    const before = new Map(ngx.workerPids().map((pid) => [pid, procStatus(pid).VmRSS]));
    const all = JSON.parse((await ngx.memdiag(`?fresh=1`)).body).workers;
    const s = all.reduce((a: any, b: any) => (b.time > a.time ? b : a)); // the answering worker's, collected now
    const after = procStatus(s.pid).VmRSS;
    const lo = Math.min(before.get(s.pid)!, after), hi = Math.max(before.get(s.pid)!, after);
    expect(s.system.rss_bytes).toBeGreaterThanOrEqual(lo * 0.97);
    expect(s.system.rss_bytes).toBeLessThanOrEqual(hi * 1.03);
    expect(s.system.vm_data_bytes).toBeGreaterThan(0);
  });

  test("the longest slice's CPU time is within the worker's CPU time read by the test around it", async () => {
    const cpuNs = (pid: number) => Number(fs.readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[0]);
    const before = new Map(ngx.workerPids().map((pid) => [pid, cpuNs(pid)]));
    const all = JSON.parse((await ngx.memdiag(`?fresh=1`)).body).workers;
    const s = all.reduce((a: any, b: any) => (b.time > a.time ? b : a));
    const spentMs = (cpuNs(s.pid) - before.get(s.pid)!) / 1e6;
    expect(s.max_slice_cpu_ms).toBeGreaterThan(0);
    expect(s.max_slice_cpu_ms).toBeLessThanOrEqual(s.max_slice_ms);
    expect(s.max_slice_cpu_ms).toBeLessThanOrEqual(spentMs);
  });

  test("unknown parameters get 400 listing the valid ones", async () => {
    const r = await ngx.memdiag("?bogus=1");
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/unknown parameter 'bogus'.*fresh.*pid.*pretty/);
    expect((await ngx.memdiag("?pid=abc")).status).toBe(400);
    expect((await ngx.memdiag("?pretty=yes")).status).toBe(400);
    expect((await ngx.memdiag("?pid=1")).status).toBe(404);
  });

  test("?pretty=1 is indented and equal to the compact form", async () => {
    const pid = ngx.workerPids()[0];
    const a = await ngx.memdiag(`?pid=${pid}&pretty=1`);
    expect(a.body).toMatch(/\n {6}"pid": \d+/);
    expect(JSON.parse(a.body).workers[0].pid).toBe(pid);
  });

  test("no errors in the error log", () => {
    expect(ngx.errors()).toEqual([]);
  });
});
