/**
 * layers/pools/rooted-jit.ts: a worker walks its pools with the interpreted copy of the rooted walk
 * until a collection walks 800 pools, then with the compiled walk until one walks fewer than
 * 400. Both copies must count the same pools: 1,000 idle keepalive connections held by this
 * test are walked once by each, back to back, and their connection pools must agree exactly.
 */
import * as net from "net";
import { Nginx, httpGet } from "../harness/nginx";
import { openKeepalive } from "../harness/keepalive";
import { validateSnapshot } from "../../schema/validate";

const HELD = 1000;

async function fresh(ngx: Nginx): Promise<any> {
  const r = await httpGet(ngx.memdiagPort, "/_memdiag?fresh=1");
  expect(r.status).toBe(200);
  const s = JSON.parse(r.body).workers[0];
  expect(validateSnapshot(s).error).toBeUndefined();
  expect(s.pools.available).toBe(true);
  return s;
}

function appActive(s: any, port: number): number {
  return s.pools.connections.by_listener.find((b: any) => b.listen === `127.0.0.1:${port}`)?.active ?? -1;
}

function connGroup(s: any): any {
  const g = s.pools.groups.find((x: any) => x.kind === "connection");
  return { pools: g.pools, blocks: g.blocks, block_bytes: g.block_bytes, large_blocks: g.large_blocks, large_bytes: g.large_bytes };
}

describe("rooted walk: interpreted copy for small workers, compiled for large ones", () => {
  // one worker, so that every ?fresh=1 is answered by the worker holding the connections
  const ngx = new Nginx({ workers: 1, workerConnections: HELD + 512, agent: { interval_s: 3600 } });
  const socks: net.Socket[] = [];
  beforeAll(() => ngx.start());
  afterAll(async () => {
    for (const s of socks) s.destroy();
    await ngx.stop();
  });

  test("switches at the thresholds, and both copies count the same pools", async () => {
    const small = await fresh(ngx);
    expect(small.pools.pools_walked).toBeLessThan(400);
    expect(small.pools.walk_compiled).toBe(false);
    expect(small.pools.walk_copy_error).toBeUndefined();

    await openKeepalive(ngx.appPort, HELD, socks);
    // the previous collection walked few pools: this one runs interpreted, and walks 1,000+
    const interpreted = await fresh(ngx);
    const compiled = await fresh(ngx);
    expect(interpreted.pools.walk_compiled).toBe(false);
    expect(compiled.pools.walk_compiled).toBe(true);
    for (const s of [interpreted, compiled]) {
      expect(appActive(s, ngx.appPort)).toBe(HELD);
      expect(s.pools.pools_walked).toBeGreaterThanOrEqual(HELD);
    }
    expect(connGroup(compiled)).toEqual(connGroup(interpreted));
    expect(connGroup(compiled).pools).toBeGreaterThanOrEqual(HELD);
    expect(compiled.pools.connections).toEqual(interpreted.pools.connections);

    for (const s of socks.splice(0)) s.destroy();
    // polled until the worker has seen them close; the collection after one that walked
    // fewer than 400 pools is interpreted again
    let s = compiled;
    for (let i = 0; i < 50 && appActive(s, ngx.appPort) !== 0; i++) s = await fresh(ngx);
    expect(appActive(s, ngx.appPort)).toBe(0);
    expect(s.pools.pools_walked).toBeLessThan(400);
    const after = await fresh(ngx);
    expect(after.pools.walk_compiled).toBe(false);
  });

  test("no crash and no errors in the error log", () => {
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });
});
