/**
 * pid=N with an action that runs in a worker: fresh=1, deep=1 and the sampler run in worker N
 * whichever worker accepts the request. Ground truth: the pid the leak fixture reports for the
 * worker that holds its pools, the X-Memdiag-Answered-By header, and each worker's own
 * snapshot sequence (a collection that ran elsewhere would not advance it).
 */
import { Nginx, httpGet } from "../harness/nginx";
import { LEAKY_LOCATIONS, ensureSampler, leakyLoadModule, samplerCall as sampler } from "../harness/fixtures";
import { validateSnapshot } from "../../schema/validate";

const answeredBy = (r: { headers: Record<string, unknown> }) => Number(r.headers["x-memdiag-answered-by"]);

describe("pid=N: the action runs in worker N whichever worker answers", () => {
  const ngx = new Nginx({ workers: 2, main: leakyLoadModule(), appLocations: LEAKY_LOCATIONS });
  beforeAll(async () => {
    ensureSampler();
    await ngx.start();
    await ngx.snapshots(); // both workers published: that is how a worker finds the others
  });
  afterAll(() => ngx.stop());

  test("fresh=1&pid=N: N collects now (its seq advances, its snapshot is newer than the request)", async () => {
    const pids = ngx.workerPids();
    let handedOver = 0;
    for (let i = 0; i < 4; i++) {
      for (const pid of pids) {
        const seqBefore = JSON.parse((await ngx.memdiag(`?pid=${pid}`)).body).workers[0].seq;
        const t0 = Date.now() / 1000;
        const r = await ngx.memdiag(`?fresh=1&pid=${pid}`);
        expect(r.status).toBe(200);
        const w = JSON.parse(r.body).workers[0];
        expect(w.pid).toBe(pid);
        expect(w.seq).toBeGreaterThan(seqBefore);
        expect(w.time).toBeGreaterThanOrEqual(t0 - 0.01);
        if (answeredBy(r) !== pid) handedOver++;
      }
    }
    // with two workers the kernel hands some requests to the other one
    expect(handedOver).toBeGreaterThan(0);
  });

  test("deep=1&pid=N scans N: the fixture's pools are found in the worker that holds them, asked through the other", async () => {
    const N = 12;
    const st = JSON.parse((await httpGet(ngx.appPort, `/leaky/update-leak?n=${N}`)).body);
    expect(st.live_pools).toBe(N);
    const holder: number = st.pid;
    const other = ngx.workerPids().find((p) => p !== holder)!;
    // ask until the other worker answers: then the scan must still run in the holder
    let r;
    for (let i = 0; i < 40; i++) {
      r = await ngx.memdiag(`?deep=1&pid=${holder}`);
      expect(r.status).toBe(200);
      if (answeredBy(r) === other) break;
    }
    expect(answeredBy(r!)).toBe(other);
    const w = JSON.parse(r!.body).workers[0];
    expect(validateSnapshot(w).error).toBeUndefined();
    expect(w.pid).toBe(holder);
    expect(w.scan.state).toBe("done");
    const want = new Set(st.pools);
    const groups = w.pools.unrooted.filter((g: any) => g.examples.some((e: string) => want.has(e)));
    expect(groups).toHaveLength(1);
    expect(groups[0].pools).toBe(N);
    // the answering worker ran no scan of its own
    const mine = JSON.parse((await ngx.memdiag(`?pid=${other}`)).body).workers[0];
    expect(mine.scan?.state ?? "none").not.toBe("done");
    await httpGet(ngx.appPort, "/leaky/reset");
  });

  test("sampler=arm&pid=N, then top&pid=N and disarm&pid=N: all reach N (the README sequence)", async () => {
    const [a, b] = ngx.workerPids();
    const armed = await sampler(ngx, `arm&pid=${a}`);
    expect(armed).toMatchObject({ pid: a, armed: true });
    for (let i = 0; i < 4; i++) {
      expect(await sampler(ngx, `status&pid=${a}`)).toMatchObject({ pid: a, armed: true });
      expect(await sampler(ngx, `status&pid=${b}`)).toMatchObject({ pid: b, armed: false });
    }
    const top = await sampler(ngx, `top&pid=${a}`);
    expect(top.pid).toBe(a);
    expect(top.sampler.armed).toBe(true);
    expect(await sampler(ngx, `disarm&pid=${a}`)).toMatchObject({ pid: a, armed: false, restore_mismatch: 0 });
  });

  test("a pid that is not a worker: 404 for fresh and deep, nothing runs", async () => {
    for (const q of ["?fresh=1&pid=1", "?deep=1&pid=1"]) {
      const r = await ngx.memdiag(q);
      expect(r.status).toBe(404);
      expect(JSON.parse(r.body).error).toMatch(/no worker with pid 1/);
    }
    expect(ngx.errors()).toEqual([]);
  });
});
