/**
 * Hostile and bad input (issue 6). Every case is counted (tried / survived) and must get
 * a defined answer while the process under attack stays up and stored data stays as it was.
 *  - /_memdiag from a real non-loopback source: a network namespace of the test's own with
 *    a veth pair (10.213.x.1 host side, .2 inside); refused (403) unless allowlisted (exact
 *    address, CIDR), X-Forwarded-For does not help; malformed and unknown parameters → 400
 *    with the list of valid ones; a flood of ?deep=1 → one scan at a time, the others 202 +
 *    Retry-After; a flood of concurrent ?fresh=1 → coalesced into few collections.
 *  - Control plane (its own process, token set): ingest websocket and REST API fuzzed with
 *    malformed JSON, schema-violating snapshots, huge frames and bodies, binary frames,
 *    unknown types, wrong/missing tokens, slow-loris HTTP and websocket connections; the
 *    web console and API from the namespace without the token → 401; the token never in
 *    a URL, a log line, /_memdiag output or a command line. Row counts and a checksum of
 *    the stored snapshots are the same before and after.
 * Namespaces need root (skipped otherwise).
 */
import Database from "better-sqlite3";
import { execFileSync, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import WebSocket from "ws";
import { Nginx, httpGet, sleep } from "../harness/nginx";
import { freePort } from "../harness/ports";
import { SimAgent } from "../harness/control-plane";
import { buildSnapshot, identityOf } from "../fixtures/snapshots";
import { CPProcess, FULL, VethNamespace, ensureDist, tally, tempDir, waitFor } from "./lib";

const isRoot = process.getuid?.() === 0;
const ns = new VethNamespace("mdh", 213);
const HOST_IP = ns.hostIp;
const NS_IP = ns.nsIp;
const curlNs = (url: string, headers: string[] = []) => ns.curl(url, headers);

/** /_memdiag's own server also listens on the veth address (what a user exposing it would do) */
class ExposedNginx extends Nginx {
  writeConf(): void {
    super.writeConf();
    const f = path.join(this.prefix, "conf", "memdiag.conf");
    const conf = fs.readFileSync(f, "utf8").replace(/(\n\s*listen 127\.0\.0\.1:(\d+);)/, `$1\n    listen ${HOST_IP}:$2;`);
    fs.writeFileSync(f, conf);
  }
}

interface Case {
  name: string;
  ok: boolean;
  detail: string;
}

const d = isRoot ? describe : describe.skip;

d("/_memdiag under hostile input", () => {
  const cases: Case[] = [];
  const token = crypto.randomBytes(16).toString("hex");
  let ngx: ExposedNginx;
  const add = (name: string, ok: boolean, detail = "") => {
    cases.push({ name, ok, detail });
    if (!ok) console.log(`FAILED: ${name}: ${detail}`);
  };
  beforeAll(async () => {
    ns.up();
    ngx = new ExposedNginx({ workers: 1, agent: { interval_s: 1, token } });
    await ngx.start();
    await ngx.snapshots();
  }, 60000);
  afterAll(async () => {
    await ngx?.stop();
    ns.down();
    tally("/_memdiag hostile input", cases.length, cases.filter((c) => c.ok).length);
  });

  test("non-loopback clients refused unless allowlisted", async () => {
    const url = `http://${HOST_IP}:${ngx.memdiagPort}/_memdiag`;
    let r = curlNs(url);
    add("netns client, no allowlist → 403", r.status === 403 && /not allowed/.test(r.body), `${r.status} ${r.body}`);
    r = curlNs(url, ["X-Forwarded-For: 127.0.0.1", "X-Real-IP: 127.0.0.1"]);
    add("netns client with spoofed X-Forwarded-For → 403", r.status === 403, `${r.status}`);
    r = curlNs(`${url}?fresh=1`);
    add("netns client ?fresh=1 → 403 (no work done)", r.status === 403, `${r.status}`);
    // the host's own non-loopback address is not loopback either
    const h = await httpGet(ngx.memdiagPort, "/_memdiag").catch(() => undefined);
    add("loopback client → 200", h?.status === 200, `${h?.status}`);
    for (const [allow, expected] of [[[NS_IP], 200], [[ns.subnet], 200], [[ns.subnet.replace(/\.\d+\.0\/30$/, ".0.0/24")], 403] /* a /24 beside the namespace's */, [["10.0.0.0/8"], 200], [[`${NS_IP}0`], 403]] as [string[], number][]) {
      ngx.opts.agent!.allow = allow;
      await ngx.reload();
      await ngx.snapshots();
      r = curlNs(url);
      add(`allow ${JSON.stringify(allow)} → ${expected}`, r.status === expected, `${r.status} ${r.body.slice(0, 100)}`);
    }
    ngx.opts.agent!.allow = [];
    await ngx.reload();
    await ngx.snapshots();
    r = curlNs(url);
    add("allowlist removed again → 403", r.status === 403, `${r.status}`);
    expect(cases.filter((c) => !c.ok)).toEqual([]);
  }, 120000);

  test("malformed and unknown parameters → 400 with the valid ones", async () => {
    const bad = [
      "?foo=1", "?fresh=2", "?fresh=", "?fresh", "?fresh=1&fresh=1", "?pid=abc", "?pid=-1", "?pid=1.5", "?pid=0x10",
      "?pretty=yes", "?deep=true", "?%00=1", "?fresh%00=1", `?${"a".repeat(4000)}=1`, "?pid=1&zz=%ff%fe", "?sampler=bogus",
      "?sampler=arm&sampler_rate=-5", "?sampler=top&sampler_limit=100000", "?pretty=1&fresh=1&deep=1&pid=1&extra=1",
      "?fresh=%31%32", "?;drop=1", "?a[b]=1",
    ];
    for (const q of bad) {
      const r = await httpGet(ngx.memdiagPort, `/_memdiag${q}`).catch((e) => ({ status: 0, body: String(e), headers: {} }));
      let msg = "";
      try {
        msg = JSON.parse(r.body).error ?? "";
      } catch {
        /* not JSON */
      }
      add(`${q.slice(0, 40)} → 400 + message`, r.status === 400 && msg.length > 5, `${r.status} ${r.body.slice(0, 160)}`);
    }
    const unknown = await httpGet(ngx.memdiagPort, "/_memdiag?bogus=1");
    add("unknown parameter lists the valid ones", /valid: .*fresh.*pid/.test(JSON.parse(unknown.body).error), unknown.body.slice(0, 200));
    // other methods
    const post = await new Promise<number>((res) => {
      const s = net.connect(ngx.memdiagPort, "127.0.0.1", () => s.write("POST /_memdiag HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
      let b = "";
      s.on("data", (x) => (b += x));
      s.on("close", () => res(Number(/HTTP\/1\.1 (\d+)/.exec(b)?.[1] ?? 0)));
    });
    add("POST → 405", post === 405, String(post));
    // garbage on the wire
    const raw = await new Promise<string>((res) => {
      const s = net.connect(ngx.memdiagPort, "127.0.0.1", () => s.write("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"));
      let b = "";
      s.on("data", (x) => (b += x));
      s.on("close", () => res(b));
      s.setTimeout(5000, () => s.destroy());
    });
    add("TLS/garbage bytes → 400 from nginx", /^HTTP\/1\.1 400/.test(raw), raw.slice(0, 40));
    const ok = await httpGet(ngx.memdiagPort, "/_memdiag");
    add("still answering", ok.status === 200);
    expect(cases.filter((c) => !c.ok)).toEqual([]);
  }, 60000);

  test("floods: ?deep=1 one at a time per worker, ?fresh=1 coalesced", async () => {
    const pid = ngx.workerPids()[0];
    const N = FULL ? 200 : 40;
    const rs = await Promise.all(Array.from({ length: N }, () => httpGet(ngx.memdiagPort, "/_memdiag?deep=1", 120000).catch(() => ({ status: 0, body: "", headers: {} as any }))));
    const by: Record<number, number> = {};
    for (const r of rs) by[r.status] = (by[r.status] ?? 0) + 1;
    const waits = rs.filter((r) => r.status === 202);
    const ran = rs.filter((r) => r.status === 200).length;
    add(`${N} concurrent ?deep=1 → one scan runs, the rest 202 + Retry-After`, ran >= 1 && ran <= 3 && waits.length === N - ran && waits.every((r) => r.headers["retry-after"] !== undefined && /already running/.test(r.body)), JSON.stringify(by));
    const s0 = (await ngx.memdiag(`?pid=${pid}`)).body;
    const seq0 = JSON.parse(s0).workers[0].seq;
    const M = FULL ? 500 : 100;
    const fr = await Promise.all(Array.from({ length: M }, () => httpGet(ngx.memdiagPort, "/_memdiag?fresh=1", 60000).catch(() => ({ status: 0, body: "", headers: {} }))));
    const seq1 = JSON.parse((await ngx.memdiag(`?pid=${pid}`)).body).workers[0].seq;
    const collections = seq1 - seq0;
    add(`${M} concurrent ?fresh=1 → all 200, coalesced into fewer collections`, fr.every((r) => r.status === 200) && collections < M / 2, `${collections} collections for ${M} requests`);
    console.log(`deep flood: ${JSON.stringify(by)}; fresh flood: ${collections} collections for ${M} concurrent requests`);
    add("worker unchanged after floods", JSON.stringify(ngx.workerPids()) === JSON.stringify([pid]));
    add("no crash in the error log", !/exited on signal/.test(ngx.errorLog()));
    const body = (await ngx.memdiag("?pretty=1")).body;
    add("token not in /_memdiag output", !body.includes(token));
    add("token not in the nginx error log", !ngx.errorLog().includes(token));
    expect(cases.filter((c) => !c.ok)).toEqual([]);
  }, 300000);
});

d("control plane under hostile input", () => {
  const cases: Case[] = [];
  const token = crypto.randomBytes(16).toString("hex");
  const dir = isRoot ? tempDir() : "";
  const db = path.join(dir, "memdiag.db");
  let cp: CPProcess;
  let port = 0;
  const add = (name: string, ok: boolean, detail = "") => {
    cases.push({ name, ok, detail });
    if (!ok) console.log(`FAILED: ${name}: ${detail}`);
  };
  const ident = identityOf({ pid: 777, instance: "fuzz/instance", worker_start: 1700000000 });

  function dbState(): { snapshots: number; workers: number; snapSum: string; sum: string } {
    const x = new Database(db, { readonly: true, fileMustExist: true });
    try {
      const h = crypto.createHash("sha256");
      for (const r of x.prepare("SELECT id, worker, seq, time, deep, rss_bytes, metrics, full FROM snapshots ORDER BY id").all() as any[]) {
        h.update(`${r.id}|${r.worker}|${r.seq}|${r.time}|${r.deep}|${r.rss_bytes}|${r.metrics}|`);
        h.update(r.full);
      }
      const snapSum = h.copy().digest("hex").slice(0, 16);
      for (const r of x.prepare("SELECT id, key, snapshots FROM workers ORDER BY id").all() as any[]) h.update(`${r.id}|${r.key}|${r.snapshots}`);
      const n = (x.prepare("SELECT COUNT(*) AS n FROM snapshots").get() as any).n;
      const w = (x.prepare("SELECT COUNT(*) AS n FROM workers").get() as any).n;
      return { snapshots: n, workers: w, snapSum, sum: h.digest("hex").slice(0, 16) };
    } finally {
      x.close();
    }
  }

  /** open /ingest, optionally say hello; resolves with the agent */
  async function agent(hello: boolean, tok = token): Promise<SimAgent> {
    const a = await SimAgent.connect(`ws://127.0.0.1:${port}`);
    if (hello) {
      const w = await a.hello({ ...ident, pid: 1000 + Math.floor(Math.random() * 50000) } as any, tok);
      if (w.type !== "welcome") throw new Error(`no welcome: ${JSON.stringify(w)}`);
    }
    return a;
  }

  /** next message or the close, whichever first */
  async function answer(a: SimAgent, timeoutMs = 10000): Promise<any> {
    return Promise.race([a.next(), a.closed.then((c) => ({ closed: c.code, reason: c.reason })), sleep(timeoutMs).then(() => ({ timeout: true }))]);
  }

  beforeAll(async () => {
    ensureDist();
    ns.up();
    port = await freePort();
    // listens on all addresses (non-loopback needs the token): loopback and the veth address
    cp = new CPProcess(port, db, token, [], "0.0.0.0");
    await cp.start();
    // some real data first
    const a = await SimAgent.connect(`ws://127.0.0.1:${port}`);
    const w = await a.hello(ident, token);
    expect(w.type).toBe("welcome");
    for (let i = 1; i <= 20; i++) {
      const r = await a.push(i, buildSnapshot({ pid: ident.pid, instance: ident.instance, worker_start: ident.worker_start, seq: i, time: 1700000100 + i }));
      expect(r.type).toBe("ack");
    }
    await a.close();
  }, 60000);

  afterAll(async () => {
    await cp?.stop();
    ns.down();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    tally("control plane hostile input", cases.length, cases.filter((c) => c.ok).length);
  });

  test("ingest websocket fuzz", async () => {
    const before = dbState();
    const pid0 = cp.pid;
    // no hello / bad hello
    let a = await agent(false);
    a.send("{not json");
    let r = await answer(a);
    add("first frame malformed JSON → close 4402", r.closed === 4402, JSON.stringify(r));
    a = await agent(false);
    a.send({ type: "snapshot", seq: 1, snapshot: {} });
    r = await answer(a);
    add("snapshot before hello → close 4402", r.closed === 4402, JSON.stringify(r));
    a = await agent(false);
    a.send({ type: "hello", protocol: 1, agent: ident });
    r = await answer(a);
    add("hello without token → close 4401", r.closed === 4401, JSON.stringify(r));
    a = await agent(false);
    a.send({ type: "hello", protocol: 1, token: token.slice(0, -1) + "x", agent: ident });
    r = await answer(a);
    add("hello with wrong token → close 4401", r.closed === 4401, JSON.stringify(r));
    a = await agent(false);
    a.send({ type: "hello", protocol: 99, token, agent: ident });
    r = await answer(a);
    add("hello with unknown protocol → close 4400", r.closed === 4400, JSON.stringify(r));
    a = await agent(false);
    a.send({ type: "hello", protocol: 1, token, agent: { ...ident, pid: -5 } });
    r = await answer(a);
    add("hello with bad identity → close 4400", r.closed === 4400, JSON.stringify(r));
    a = await agent(false);
    a.send({ type: "rm -rf", token });
    r = await answer(a);
    add("unknown message type → close 4415", r.closed === 4415, JSON.stringify(r));
    // slow loris: connect and say nothing
    a = await agent(false);
    const t0 = Date.now();
    r = await answer(a, 15000);
    add("websocket that never says hello → closed 4402 by the hello timeout", r.closed === 4402 && Date.now() - t0 < 12000, `${JSON.stringify(r)} after ${Date.now() - t0} ms`);

    // after hello: bad frames get an error each; a run of them closes with 4400
    const good = buildSnapshot({ pid: 1, seq: 1 });
    const variants: [string, unknown][] = [
      ["malformed JSON", "{\"type\":\"snapshot\",\"seq\":1,"],
      ["JSON array", "[1,2,3]"],
      ["no seq", { type: "snapshot", snapshot: good }],
      ["negative seq", { type: "snapshot", seq: -1, snapshot: good }],
      ["snapshot not an object", { type: "snapshot", seq: 1, snapshot: "x" }],
      ["empty snapshot", { type: "snapshot", seq: 1, snapshot: {} }],
      ["schema: rss_bytes a string", { type: "snapshot", seq: 1, snapshot: { ...good, system: { ...(good.system as object), rss_bytes: "lots" } } }],
      ["schema: wrong schema version", { type: "snapshot", seq: 1, snapshot: { ...good, schema: 999 } }],
      ["schema: negative byte count", { type: "snapshot", seq: 1, snapshot: { ...good, system: { ...(good.system as object), rss_bytes: -1 } } }],
      ["schema: 1e308 values and deep nesting", { type: "snapshot", seq: 1, snapshot: { ...good, glibc: JSON.parse("[".repeat(500) + "]".repeat(500)) } }],
      ["pid of another worker", { type: "snapshot", seq: 1, snapshot: good }],
      ["command_result without id", { type: "command_result", ok: "yes" }],
      ["second hello", { type: "hello", protocol: 1, token, agent: ident }],
    ];
    for (const [name, v] of variants) {
      a = await agent(true);
      a.send(v as any);
      r = await answer(a);
      add(`after hello, ${name} → error reply`, r.type === "error" && typeof r.error === "string" && r.error.length > 5, JSON.stringify(r).slice(0, 200));
      await a.close();
    }
    a = await agent(true);
    a.ws.send(Buffer.from([0, 1, 2, 3]), { binary: true });
    r = await answer(a);
    add("binary frame → error reply", r.type === "error", JSON.stringify(r));
    await a.close();
    a = await agent(true);
    for (let i = 0; i < 5; i++) a.send("{bad");
    let closed: any;
    for (let i = 0; i < 7 && !closed; i++) {
      const m = await answer(a);
      if (m.closed !== undefined || m.timeout) closed = m;
    }
    add("5 bad frames in a row → close 4400", closed?.closed === 4400, JSON.stringify(closed));
    // huge frame
    a = await agent(true);
    a.send(JSON.stringify({ type: "snapshot", seq: 1, snapshot: { pad: "x".repeat(5 << 20) } }));
    r = await answer(a);
    add("5 MB frame (max 4 MB) → close 1009", r.closed === 1009, JSON.stringify(r));
    // a frame header announcing 2^62 bytes, then nothing (raw socket)
    const raw = await new Promise<string>((res) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.write(`GET /ingest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
        setTimeout(() => s.write(Buffer.from([0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])), 200);
      });
      let b = Buffer.alloc(0);
      s.on("data", (x) => (b = Buffer.concat([b, x])));
      s.on("close", () => res(b.toString("latin1")));
      s.setTimeout(10000, () => s.destroy());
    });
    add("frame header claiming 2^62 bytes → closed (1009)", raw.includes("101 Switching") && /\x88/.test(raw), JSON.stringify(raw.slice(-40)));
    // ws slow loris: many upgrades that never hello, then a real agent still works
    const idle = await Promise.all(Array.from({ length: 100 }, () => agent(false)));
    const b = await agent(true);
    r = await b.push(1, buildSnapshot({ pid: 1, seq: 1 }));
    add("100 silent websockets: a real agent still gets its error/ack answers", r.type === "error" || r.type === "ack", JSON.stringify(r).slice(0, 100));
    await b.close();
    for (const x of idle) x.ws.terminate();
    const after = dbState();
    add("process still up (same pid)", cp.running && cp.pid === pid0);
    // the single schema-valid-looking frame from a foreign pid was rejected; nothing stored by the fuzz
    // hellos of the fuzzing agents add worker rows (that is what a hello does); stored snapshots must not change
    add("stored snapshots: row count and checksum unchanged by the fuzz", after.snapshots === before.snapshots && after.snapSum === before.snapSum, `${JSON.stringify(before)} → ${JSON.stringify(after)}`);
    const h = await (await fetch(`http://127.0.0.1:${port}/api/health`)).json();
    add("health ok after the fuzz", h.ok === true, JSON.stringify(h.store));
    expect(cases.filter((c) => !c.ok)).toEqual([]);
  }, 180000);

  test("REST API, web console and slow-loris HTTP", async () => {
    const before = dbState();
    const base = `http://127.0.0.1:${port}`;
    const st = async (p: string, init?: RequestInit) => {
      const r = await fetch(`${base}${p}`, init).catch((e) => ({ status: 0, text: async () => String(e) }) as any);
      return { status: r.status as number, body: await r.text() };
    };
    const expectStatus = async (name: string, p: string, want: number, init?: RequestInit) => {
      const r = await st(p, init);
      let jsonErr = false;
      try {
        jsonErr = typeof JSON.parse(r.body).error === "string";
      } catch {
        /* */
      }
      add(`${name} → ${want}`, r.status === want && (want < 400 || jsonErr), `${r.status} ${r.body.slice(0, 120)}`);
    };
    await expectStatus("unknown query parameter", "/api/workers?bogus=1", 400);
    await expectStatus("bad state", "/api/workers?state=zombie", 400);
    await expectStatus("unknown worker", "/api/workers/nope", 404);
    await expectStatus("snapshot id not a number", "/api/snapshots/abc", 400);
    await expectStatus("snapshot id huge", "/api/snapshots/99999999999999999999999", 400);
    await expectStatus("series without metric", "/api/series?worker=x", 400);
    await expectStatus("diff without args", "/api/diff", 400);
    await expectStatus("unknown endpoint", "/api/no-such-endpoint", 404);
    const trav = spawnSync("curl", ["-s", "-m", "5", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", `${base}/../../../../etc/passwd`], { encoding: "utf8" });
    add("path traversal (--path-as-is /../../etc/passwd) → 4xx, no file", /\n4\d\d$/.test(trav.stdout) && !trav.stdout.includes("root:"), trav.stdout.slice(-60));
    const trav2 = spawnSync("curl", ["-s", "-m", "5", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", `${base}/%2e%2e/%2e%2e/etc/passwd`], { encoding: "utf8" });
    add("encoded path traversal → 4xx, no file", /\n4\d\d$/.test(trav2.stdout) && !trav2.stdout.includes("root:"), trav2.stdout.slice(-60));
    await expectStatus("command: malformed JSON body", "/api/workers/x/command", 400, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
    await expectStatus("command: 1 MB body", "/api/workers/x/command", 413, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ command: "x".repeat(1 << 20) }) });
    await expectStatus("command: unknown command", `/api/workers/${encodeURIComponent("fuzz/instance/777/1700000000")}/command`, 400, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ command: "rm" }) });
    await expectStatus("/metrics with a parameter", "/metrics?x=1", 400);
    // from the namespace: a real non-loopback client
    const nsBase = `http://${HOST_IP}:${port}`;
    for (const p of ["/", "/index.html", "/app.js", "/api/workers", "/api/health", "/metrics"]) {
      const r = curlNs(`${nsBase}${p}`);
      add(`netns ${p} without token → 401`, r.status === 401 && !r.body.includes("<html") && !r.body.includes("memdiag_"), `${r.status} ${r.body.slice(0, 80)}`);
    }
    let r = curlNs(`${nsBase}/api/workers`, [`Authorization: Bearer ${token}x`]);
    add("netns wrong token → 401", r.status === 401, `${r.status}`);
    r = curlNs(`${nsBase}/api/workers`, [`Authorization: Bearer ${token}`]);
    add("netns right token → 200", r.status === 200, `${r.status}`);
    r = curlNs(`${nsBase}/`, [`Authorization: Basic ${Buffer.from(`u:${token}`).toString("base64")}`]);
    add("netns web console with the token (Basic) → 200", r.status === 200, `${r.status}`);
    r = curlNs(`${nsBase}/api/workers?token=${token}`);
    add("netns token in the URL is not accepted → 401", r.status === 401, `${r.status}`);
    // /live from the namespace without the token: the upgrade is refused
    const live = ns.run("curl", ["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
      "-H", "Sec-WebSocket-Version: 13", "-H", `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}`, `${nsBase}/live`]);
    add("netns /live websocket without token → 401", live.stdout === "401", live.stdout);

    // slow loris: 200 connections trickling headers; the API keeps answering
    const socks: net.Socket[] = [];
    for (let i = 0; i < 200; i++) {
      const s = net.connect(port, "127.0.0.1", () => s.write("GET /api/health HTTP/1.1\r\nHost: x\r\nX-a: "));
      s.on("error", () => undefined);
      socks.push(s);
    }
    const trickle = setInterval(() => socks.forEach((s) => s.writable && s.write("a")), 1000);
    await sleep(2000);
    const t0 = Date.now();
    const h = await st("/api/health");
    add("200 slow-loris connections: health still answers", h.status === 200 && Date.now() - t0 < 2000, `${h.status} in ${Date.now() - t0} ms`);
    if (FULL) {
      // node's headersTimeout (60 s) closes them with 408
      let got408 = 0;
      const s = net.connect(port, "127.0.0.1", () => s.write("GET / HTTP/1.1\r\nHost: x\r\n"));
      s.on("data", (x) => (got408 += /408/.test(x.toString()) ? 1 : 0));
      await new Promise((res) => s.on("close", res));
      add("a slow-loris connection is closed by the headers timeout (408)", got408 === 1);
    }
    clearInterval(trickle);
    for (const s of socks) s.destroy();

    // secrets
    add("token not in the control plane log", !cp.log.includes(token), "");
    const ps = execFileSync("ps", ["-o", "args=", "-p", String(cp.pid)], { encoding: "utf8" });
    add("token not on the control plane's command line", !ps.includes(token), ps.trim());
    const after = dbState();
    add("stored rows and checksum unchanged", JSON.stringify(after) === JSON.stringify(before), `${JSON.stringify(before)} → ${JSON.stringify(after)}`);
    add("process still up", cp.running);
    expect(cases.filter((c) => !c.ok)).toEqual([]);
  }, 180000);
});
