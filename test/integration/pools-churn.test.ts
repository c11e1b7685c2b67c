/**
 * The rooted walk while connections and requests come and go: collections that
 * yield between slices see slots freed and reused under them. They must never
 * crash a worker, every snapshot stays schema-valid, and the counts stay within
 * what the worker can hold. And however many slices they yield between, the
 * agent writes nothing to the error log (a [warn] per yield would flood it).
 */
import * as net from "net";
import { Nginx, httpGet, sleep } from "../harness/nginx";
import { validateSnapshot } from "../../schema/validate";

/** short-lived connections with a request each, as fast as possible, until stopped */
function churn(port: number, parallel: number): { stop: () => Promise<number> } {
  let running = true;
  let done = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => s.write("GET /t/slow HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n"));
      s.on("data", () => undefined);
      s.on("close", () => {
        done++;
        resolve();
      });
      s.on("error", () => resolve());
    });
  const loops = Array.from({ length: parallel }, async () => {
    while (running) await one();
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return done;
    },
  };
}

const SLOW_LOCATION = `
    location = /t/slow {
        content_by_lua_block {
            local t = {}
            for i = 1, 50 do t[i] = ngx.md5(i) end
            ngx.sleep(0.01)
            ngx.say(#t)
        }
    }`;

/** keepalive connections held open, so that every collection has pools to walk and yields often */
function holdConnections(port: number, n: number): net.Socket[] {
  const held: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, "127.0.0.1", () => s.write("GET /ok HTTP/1.1\r\nHost: k\r\n\r\n"));
    s.on("error", () => undefined);
    held.push(s);
  }
  return held;
}

/** An nginx started for the enclosing describe, its collections cut into slices as small as possible (many yields each). */
function slicedNginx(intervalS: number): Nginx {
  const ngx = new Nginx({ workers: 2, workerConnections: 4096, agent: { slice_ms: 0.05, interval_s: intervalS }, appLocations: SLOW_LOCATION });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());
  return ngx;
}

/** Runs `body` while `held` keepalive connections stay open and `parallel` loops churn short ones; returns the churned count. */
async function underLoad(ngx: Nginx, held: number, parallel: number, body: () => Promise<void>): Promise<number> {
  const sockets = holdConnections(ngx.appPort, held);
  const load = churn(ngx.appPort, parallel);
  let done = 0;
  try {
    await body();
  } finally {
    done = await load.stop();
    for (const s of sockets) s.destroy();
  }
  return done;
}

describe("rooted walk under connection churn", () => {
  const ngx = slicedNginx(3600);

  test("collections during churn: no crash, valid snapshots, sane counts", async () => {
    let snaps = 0;
    let yielded = 0;
    const churned = await underLoad(ngx, 300, 32, async () => {
      for (let i = 0; i < 40; i++) {
        const r = await httpGet(ngx.memdiagPort, "/_memdiag?fresh=1");
        expect(r.status).toBe(200);
        for (const s of JSON.parse(r.body).workers) {
          expect(validateSnapshot(s).error).toBeUndefined();
          expect(s.pools.available).toBe(true);
          const c = s.pools.connections;
          // every slot is counted once, in the state it had when the walk reached it
          expect(c.active + c.free + c.fake).toBeLessThanOrEqual(c.connection_n);
          snaps++;
          if (s.slices > 1) yielded++;
        }
      }
    });
    expect(churned).toBeGreaterThan(0);
    expect(snaps).toBeGreaterThan(40);
    // the walk really was sliced while the load ran
    expect(yielded).toBeGreaterThan(0);
    await sleep(200);
    expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });
});

describe("sliced collections leave the error log clean", () => {
  // timer collections 5 times a second, each cut into many slices
  const ngx = slicedNginx(0.2);

  test("hundreds of yields under load (timer and ?fresh=1 collections): no [warn] or worse in the error log", async () => {
    // yields seen in the snapshots: fresh ones, and the timer's (each seq of each worker once)
    const seen = new Map<string, number>();
    await underLoad(ngx, 500, 16, async () => {
      const deadline = Date.now() + 6000;
      while (Date.now() < deadline) {
        for (const q of ["/_memdiag?fresh=1", "/_memdiag"]) {
          const r = await httpGet(ngx.memdiagPort, q);
          expect(r.status).toBe(200);
          for (const s of JSON.parse(r.body).workers) seen.set(`${s.pid}:${s.seq}`, s.slices - 1);
        }
        await sleep(50);
      }
    });
    const yields = [...seen.values()].reduce((a, b) => a + b, 0);
    // the log must have had every chance to fill: many collections, many yields each
    expect(seen.size).toBeGreaterThan(40);
    expect(yields).toBeGreaterThan(400);
    await sleep(200);
    // ground truth: the error log file itself (error_log at level info)
    const bad = ngx
      .errorLog()
      .split("\n")
      .filter((l) => /\[(warn|error|crit|alert|emerg)\]/.test(l));
    expect({ lines: bad.length, first: bad.slice(0, 5) }).toEqual({ lines: 0, first: [] });
  });
});
