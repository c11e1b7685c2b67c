/**
 * The rooted pool walk against a real nginx, asserted against ground truth the
 * test controls: known large allocations in a held request's pool, N held-open
 * keepalive sockets, the configured worker_connections, and a reload.
 */
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import * as http2 from "http2";
import { Nginx, httpGet } from "../harness/nginx";
import { freePort } from "../harness/ports";
import { ROOT } from "../../control-plane/src/config-file";
import { openKeepalive } from "../harness/keepalive";
import { validateSnapshot } from "../../schema/validate";
import { PLATFORM } from "../harness/platform";

const WORKER_CONNECTIONS = 1536;
const LARGE = 300 * 1024;
const NLARGE = 10;
const NSMALL = 20;

/** the committed layout for this machine's nginx (one file per version in layouts/) */
function layout(): any {
  const f = fs.readdirSync(path.join(ROOT, "layouts")).find((n) => n.startsWith(`${PLATFORM.coreVersion}-`) && n.endsWith(".json"))!;
  return JSON.parse(fs.readFileSync(path.join(ROOT, "layouts", f), "utf8"));
}
const R_POOL = layout().structs.ngx_http_request_t.fields.pool;

/** Lua for a request that says "allocated", then holds on (at most 30 s) until /t/release?tag=<its tag>. */
const HOLD_UNTIL_RELEASED = `ngx.say("allocated")
            ngx.flush(true)
            local d = ngx.shared.test_dict
            local key = "release:" .. (ngx.var.arg_tag or "")
            for i = 1, 600 do
                if d:get(key) then break end
                ngx.sleep(0.05)
            end`;

/**
 * /t/hold?n=N&size=S: sends its worker pid, then makes N ngx_palloc(r->pool, S)
 * calls (each larger than the pool's max, so each lands on r->pool->large) and
 * holds the request open until /t/release.
 */
const APP_LOCATIONS = `
    location = /t/hold {
        content_by_lua_block {
            local ffi = require "ffi"
            local base = require "resty.core.base"
            pcall(ffi.cdef, "void *ngx_palloc(void *pool, size_t size);")
            local n = tonumber(ngx.var.arg_n) or 0
            local size = tonumber(ngx.var.arg_size) or 0
            ngx.say(ngx.worker.pid())
            ngx.flush(true)
            local r = base.get_request()
            local pool = ffi.cast("void **", ffi.cast("char *", r) + ${R_POOL})[0]
            for i = 1, n do
                local p = ffi.C.ngx_palloc(pool, size)
                if p == nil then ngx.say("palloc failed") return end
                ffi.fill(p, size, 0x5a)
            end
            -- small allocations (below the pool's max) fill blocks and chain new ones
            for i = 1, (tonumber(ngx.var.arg_small) or 0) do
                local p = ffi.C.ngx_palloc(pool, 1000)
                if p == nil then ngx.say("palloc failed") return end
            end
            ${HOLD_UNTIL_RELEASED}
            ngx.say("released")
        }
    }
    location = /t/cosock {
        content_by_lua_block {
            local sock = ngx.socket.tcp()
            local ok, err = sock:connect("127.0.0.1", ngx.var.server_port)
            if not ok then ngx.say("connect failed: ", err) return end
            sock:send("GET /ok HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
            local line = sock:receive("*l")
            ngx.say(ngx.worker.pid())
            ${HOLD_UNTIL_RELEASED}
            sock:close()
            ngx.say("released ", line)
        }
    }
    location = /t/release {
        content_by_lua_block {
            ngx.shared.test_dict:set("release:" .. (ngx.var.arg_tag or ""), true)
            ngx.say("ok")
        }
    }`;

/** Starts /t/hold (or another holding location) and resolves once its handler is ready: the pid and a finisher. */
function hold(port: number, query: string, loc = "/t/hold"): Promise<{ pid: number; done: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: `${loc}?${query}`, agent: false }, (res) => {
      let body = "";
      let resolved = false;
      let finish: (s: string) => void = () => undefined;
      const done = new Promise<string>((r) => (finish = r));
      res.on("data", (c) => {
        body += c.toString();
        if (!resolved && body.includes("allocated\n")) {
          resolved = true;
          resolve({ pid: Number(body.split("\n")[0]), done });
        }
        if (body.includes("palloc failed")) reject(new Error(body));
      });
      res.on("end", () => {
        if (!resolved) reject(new Error(`${loc}: ${res.statusCode} ${body}`));
        finish(body);
      });
    });
    req.on("error", reject);
  });
}

/** Open n keepalive connections, each with one request answered, kept open. */
async function keepalive(port: number, n: number): Promise<net.Socket[]> {
  const socks: net.Socket[] = [];
  await openKeepalive(port, n, socks);
  return socks;
}

function appListen(s: any, port: number): number {
  const l = s.pools.connections.by_listener.find((b: any) => b.listen === `127.0.0.1:${port}`);
  return l ? l.active : -1;
}

/** every worker's snapshot taken after now */
async function freshAll(ngx: Nginx): Promise<any[]> {
  return Promise.all(ngx.workerPids().map((p) => ngx.nextSnapshotOf(p)));
}

/** the usable size glibc gives a malloc(n): from the heap (16-byte chunks) or its own mapping (pages) */
function usableChoices(n: number): number[] {
  const heap = Math.max(32, Math.ceil((n + 8) / 16) * 16) - 8;
  const mmapped = Math.ceil((n + 8) / 4096) * 4096 - 16;
  return [heap, mmapped];
}

describe("rooted pools: cycle, connections, requests", () => {
  let h2Port = 0;
  const ngx = new Nginx({
    workers: 2,
    workerConnections: WORKER_CONNECTIONS,
    appLocations: APP_LOCATIONS,
  });
  beforeAll(async () => {
    h2Port = await freePort();
    // a cleartext HTTP/2 server (prior knowledge) with the same test locations
    ngx.opts.http = `lua_shared_dict test_dict 1m;
  server {
    listen 127.0.0.1:${h2Port} http2;
    ${APP_LOCATIONS}
  }`;
    await ngx.start();
  });
  afterAll(() => ngx.stop());

  test("snapshots are schema-valid, pools available, connection_n = worker_connections", async () => {
    const snaps = await ngx.snapshots();
    for (const s of snaps) {
      expect(validateSnapshot(s).error).toBeUndefined();
      expect(s.pools.available).toBe(true);
      expect(s.pools.connections.connection_n).toBe(WORKER_CONNECTIONS);
      const kinds = s.pools.groups.map((g: any) => g.kind);
      expect(kinds).toEqual(["cycle", "connection", "request"]);
      // the cycle pool: created with NGX_CYCLE_POOL_SIZE, every block that size
      expect(s.pools.cycle.kind).toBe("cycle");
      expect(s.pools.cycle.block_bytes).toBe(s.pools.cycle.blocks * layout().constants.NGX_CYCLE_POOL_SIZE);
      const cyc = s.pools.groups[0];
      expect(cyc.pools).toBe(1);
      // lua-nginx-module registers its VM cleanup on the cycle pool
      expect(cyc.cleanups.map((c: any) => c.handler)).toContain("ngx_http_lua_cleanup_vm");
      expect(s.pools.connections.active + s.pools.connections.free).toBeLessThanOrEqual(WORKER_CONNECTIONS);
    }
  });

  test("a held request's 10 × 300 KB large and 20 × 1000 B small pool allocations move its pool by exactly that", async () => {
    // baseline: the same request without allocations
    const base = await hold(ngx.appPort, "n=0&tag=base");
    const s0 = await ngx.nextSnapshotOf(base.pid);
    const p0 = s0.pools.top.find((t: any) => t.kind === "request" && t.uri === "/t/hold");
    expect(p0).toBeDefined();
    await httpGet(ngx.appPort, "/t/release?tag=base");
    expect(await base.done).toMatch(/released/);

    const h = await hold(ngx.appPort, `n=${NLARGE}&size=${LARGE}&small=${NSMALL}&tag=big`);
    const s1 = await ngx.nextSnapshotOf(h.pid);
    expect(validateSnapshot(s1).error).toBeUndefined();
    const p1 = s1.pools.top.find((t: any) => t.kind === "request" && t.uri === "/t/hold");
    expect(p1).toBeDefined();
    expect(p1.large_blocks - p0.large_blocks).toBe(NLARGE);
    // each allocation's usable size is one of the two glibc roundings: the sum must be one of the mixes
    const [heap, mapped] = usableChoices(LARGE);
    const delta = p1.large_bytes - p0.large_bytes;
    const possible = Array.from({ length: NLARGE + 1 }, (_, k) => k * mapped + (NLARGE - k) * heap);
    expect(possible).toContain(delta);
    // small allocations: every block of a pool has the size it was created with (request_pool_size
    // 4096 by default); a block takes at most 4 allocations of 1000 bytes (4096 - 32-byte header),
    // the baseline blocks at most 4 each, so at least (20 - 4 × baseline blocks) / 4 new ones
    const blockSize = p0.block_bytes / p0.blocks;
    expect(blockSize).toBe(4096);
    const dBlocks = p1.blocks - p0.blocks;
    expect(dBlocks).toBeGreaterThanOrEqual(Math.ceil((NSMALL - 4 * p0.blocks) / 4));
    expect(p1.block_bytes - p0.block_bytes).toBe(dBlocks * blockSize);
    // used bytes: the 20 × 1000 bytes, plus at most 8 bytes alignment each and a header per new block
    const dUsed = p1.used_bytes - p0.used_bytes;
    expect(dUsed).toBeGreaterThanOrEqual(NSMALL * 1000);
    expect(dUsed).toBeLessThanOrEqual(NSMALL * 1008 + dBlocks * 32);
    // the detail names its connection
    expect(p1.listen).toBe(`127.0.0.1:${ngx.appPort}`);
    expect(p1.peer).toBe("127.0.0.1");
    expect(p1.fd).toBeGreaterThan(0);
    expect(p1.age_ms).toBeGreaterThanOrEqual(0);
    expect(p1.address).toMatch(/^0x[0-9a-f]+$/);
    // and the request group carries it
    const reqGroup = s1.pools.groups.find((g: any) => g.kind === "request");
    expect(reqGroup.pools).toBeGreaterThanOrEqual(1);
    expect(reqGroup.large_bytes).toBeGreaterThanOrEqual(delta);

    await httpGet(ngx.appPort, "/t/release?tag=big");
    expect(await h.done).toMatch(/released/);
    // released: the pool is gone from that worker's next snapshot
    const s2 = await ngx.nextSnapshotOf(h.pid);
    expect(s2.pools.top.find((t: any) => t.address === p1.address && t.kind === "request")).toBeUndefined();
  });

  test("N held-open keepalive sockets show as N active connections on the app listener", async () => {
    const before = (await freshAll(ngx)).reduce((a, s) => a + appListen(s, ngx.appPort), 0);
    expect(before).toBe(0);
    const N = 37;
    const socks = await keepalive(ngx.appPort, N);
    try {
      const snaps = await freshAll(ngx);
      for (const s of snaps) expect(validateSnapshot(s).error).toBeUndefined();
      expect(snaps.reduce((a, s) => a + appListen(s, ngx.appPort), 0)).toBe(N);
      // each worker's active count covers its clients (plus listeners and the master channel)
      for (const s of snaps) expect(s.pools.connections.active).toBeGreaterThanOrEqual(appListen(s, ngx.appPort));
      // their pools are walked: connection group has at least N pools across workers
      const connPools = snaps.reduce((a, s) => a + s.pools.groups.find((g: any) => g.kind === "connection").pools, 0);
      expect(connPools).toBeGreaterThanOrEqual(N);
    } finally {
      for (const s of socks) s.destroy();
    }
    // closed by the client: back to zero (polled, no timing assertion)
    let after = -1;
    for (let i = 0; i < 20 && after !== 0; i++) {
      after = (await freshAll(ngx)).reduce((a, s) => a + appListen(s, ngx.appPort), 0);
    }
    expect(after).toBe(0);
  });

  test("requests holding outgoing cosocket connections: each request pool counted once", async () => {
    const K = 3;
    // connections without a listener that the build keeps on its own, without a pool (the
    // OpenResty build has one per worker, a pipe): the baseline the K cosockets add to
    const idle = (await freshAll(ngx)).reduce((a, s) => a + s.pools.connections.outgoing, 0);
    const held = await Promise.all(Array.from({ length: K }, (_, i) => hold(ngx.appPort, `tag=co${i}`, "/t/cosock")));
    try {
      // a snapshot's time is its end: the first one after now may have started walking before
      // the last hold arrived; the one after it started later
      await freshAll(ngx);
      const snaps = await freshAll(ngx);
      for (const s of snaps) expect(validateSnapshot(s).error).toBeUndefined();
      const sum = (f: (s: any) => number) => snaps.reduce((a, s) => a + f(s), 0);
      // K outgoing connections (no listener) in the workers that hold them
      expect(sum((s) => s.pools.connections.outgoing)).toBe(idle + K);
      // the K client connections plus the K cosocket peers are accepted on the app listener
      expect(sum((s) => appListen(s, ngx.appPort))).toBe(2 * K);
      // exactly the K holding requests are in flight (timer snapshots have no request of their own)
      expect(sum((s) => s.pools.groups.find((g: any) => g.kind === "request").pools)).toBe(K);
      // connection pools: one per accepted client, plus outgoing ones that have a pool of their own
      const conn = sum((s) => s.pools.groups.find((g: any) => g.kind === "connection").pools);
      const own = sum((s) => s.pools.connections.outgoing - s.pools.connections.borrowed_pools) - idle;
      const fakes = sum((s) => s.pools.connections.fake);
      // a poll of /_memdiag that a worker accepted while it collected has a pool of its own
      const polls = sum((s) => Math.max(0, appListen(s, ngx.memdiagPort)));
      expect(conn).toBe(2 * K + own + fakes + polls);
      const addrs = snaps.flatMap((s) => s.pools.top.map((t: any) => `${s.pid}:${t.kind}:${t.address}`));
      expect(new Set(addrs).size).toBe(addrs.length);
    } finally {
      for (let i = 0; i < K; i++) await httpGet(ngx.appPort, `/t/release?tag=co${i}`);
      for (const h of held) expect(await h.done).toMatch(/released HTTP\/1.1 200/);
    }
  });

  test("HTTP/2 streams: each stream's request pool is found through the priority tree", async () => {
    const K = 3;
    const session = http2.connect(`http://127.0.0.1:${h2Port}`);
    const streams: http2.ClientHttp2Stream[] = [];
    /** open a holding stream; resolves with the worker pid once its allocations are done */
    const openStream = (query: string) =>
      new Promise<number>((resolve, reject) => {
        const st = session.request({ ":path": `/t/hold?${query}` });
        streams.push(st);
        let body = "";
        st.on("data", (d) => {
          body += d.toString();
          if (body.includes("allocated\n")) resolve(Number(body.split("\n")[0]));
        });
        st.on("error", reject);
        st.on("end", () => reject(new Error(`stream ended early: ${body}`)));
      });
    try {
      // baseline: a stream's request pool without test allocations
      const basePid = await openStream("n=0&tag=h2base");
      const sb = await ngx.nextSnapshotOf(basePid);
      const base = sb.pools.top.find((t: any) => t.kind === "request" && t.uri === "/t/hold");
      expect(base).toBeDefined();
      await httpGet(ngx.appPort, "/t/release?tag=h2base");

      // K concurrent streams on one connection, each holding 2 × 300 KB in its request pool
      const pids = await Promise.all(Array.from({ length: K }, (_, i) => openStream(`n=2&size=${LARGE}&tag=h2s${i}`)));
      expect(pids.every((p) => p === basePid)).toBe(true);
      // one connection: one worker
      expect(new Set(pids).size).toBe(1);
      const s = await ngx.nextSnapshotOf(pids[0]);
      expect(validateSnapshot(s).error).toBeUndefined();
      expect(s.pools.connections.http2).toBe(1);
      expect(s.pools.connections.http2_streams).toBe(K);
      const reqs = s.pools.top.filter((t: any) => t.kind === "request" && t.uri === "/t/hold");
      expect(reqs.length).toBe(K);
      expect(new Set(reqs.map((t: any) => t.address)).size).toBe(K);
      const [heap, mapped] = usableChoices(LARGE);
      for (const t of reqs) {
        // exactly the two test allocations more than the baseline stream's pool
        expect(t.large_blocks - base.large_blocks).toBe(2);
        expect([2 * heap, heap + mapped, 2 * mapped]).toContain(t.large_bytes - base.large_bytes);
        expect(t.listen).toBe(`127.0.0.1:${h2Port}`);
      }
      expect(appListen(s, h2Port)).toBe(1);
    } finally {
      for (let i = 0; i < K; i++) await httpGet(ngx.appPort, `/t/release?tag=h2s${i}`);
      for (const st of streams) st.close();
      session.close();
    }
  });

  test("reload: new workers validate the layout and walk again", async () => {
    const old = ngx.workerPids();
    await ngx.reload();
    const snaps = await ngx.snapshots();
    expect(snaps.map((s) => s.pid).some((p) => old.includes(p))).toBe(false);
    for (const s of snaps) {
      expect(validateSnapshot(s).error).toBeUndefined();
      expect(s.layout).not.toBeNull();
      expect(s.pools.available).toBe(true);
      expect(s.pools.connections.connection_n).toBe(WORKER_CONNECTIONS);
    }
    const socks = await keepalive(ngx.appPort, 5);
    try {
      const fresh = await freshAll(ngx);
      expect(fresh.reduce((a, s) => a + appListen(s, ngx.appPort), 0)).toBe(5);
    } finally {
      for (const s of socks) s.destroy();
    }
    expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
  });

  test("no crash and no errors in the error log", () => {
    expect(ngx.errorLog()).not.toMatch(/exited on signal/);
    expect(ngx.errors()).toEqual([]);
  });
});
