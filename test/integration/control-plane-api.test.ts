/**
 * REST API, /metrics, suspects and commands of a real control plane fed over
 * real websockets; expected values are computed from the numbers the test fed.
 */
import * as os from "os";
import WebSocket from "ws";
import { startCP, SimAgent, RunningCP, getJson } from "../harness/control-plane";
import { buildSnapshot, identityOf, defaultSizeClasses, FIXTURE_INSTANCE } from "../fixtures/snapshots";

const MB = 1 << 20;
const OWNER = "ngx_http_x_module.so (.bss+0x40)";
const LARGE = 300_000;
const PER_POOL = 16384 + LARGE;
const enc = encodeURIComponent;

/** a leaking worker: every 10 s a snapshot, every 30 s a deep one with 2 more leaked pools */
function leakSnap(pid: number, i: number, t0: number) {
  const n = 1 + Math.floor(i / 3) * 2;
  const leak = n * PER_POOL;
  const sc = defaultSizeClasses().map((c) => (c.min_bytes === 262144 ? { ...c, chunks: c.chunks + n, bytes: c.bytes + n * LARGE } : c));
  return {
    n,
    snap: buildSnapshot({
      pid, seq: i + 1, time: t0 + i * 10, deep: i % 3 === 0, rss_bytes: 60 * MB + leak, glibc_in_use_bytes: 20 * MB + leak, anon_bytes: 50 * MB + leak,
      unrooted: [{ signature: "16384|ngx_x_cleanup|x.so.bss+0x40", owner: OWNER, pools: n, block_bytes: n * 16384, large_blocks: n, large_bytes: n * LARGE, cleanups: ["ngx_x_cleanup"] }],
      size_classes: sc,
    }),
  };
}

/** a worker under keepalive churn: RSS, request pools and a shm dict move but stay bounded */
function noisySnap(pid: number, i: number, t0: number) {
  const osc = Math.sin(i / 2) * 0.5 + Math.sin(i * 1.3) * 0.5;
  return buildSnapshot({
    pid, worker_id: 1, seq: i + 1, time: t0 + i * 10, rss_bytes: Math.round(80 * MB + 25 * MB * osc), anon_bytes: Math.round(60 * MB + 25 * MB * osc),
    glibc_in_use_bytes: Math.round(30 * MB + 20 * MB * osc), request_pools: 50 + Math.round(40 * osc),
    shm: [{ name: "cache", size_bytes: 64 * MB, used_bytes: Math.min(i * 4, 60) * MB }],
  });
}

/** minimal Prometheus text-format parser (0.0.4): throws on a malformed line */
function parseProm(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  const types = new Map<string, string>();
  expect(text.endsWith("\n")).toBe(true);
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let m: RegExpExecArray | null;
    if ((m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      if (m[1] === "TYPE") {
        expect(["gauge", "counter"]).toContain(m[3]);
        expect(types.has(m[2])).toBe(false); // one TYPE per family
        types.set(m[2], m[3]);
      }
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad line: ${line}`);
    expect(types.has(m[1])).toBe(true); // TYPE comes before samples
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let pos = 0;
      while (pos < m[3].length) {
        re.lastIndex = pos;
        const l = re.exec(m[3]);
        if (!l) throw new Error(`bad labels: ${m[3]}`);
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
        pos = re.lastIndex;
      }
    }
    const value = Number(m[4]);
    if (Number.isNaN(value) && m[4] !== "NaN") throw new Error(`bad value: ${line}`);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

describe("control plane API", () => {
  let cp: RunningCP;
  let leakKey: string, noisyKey: string;
  const fedLeak: { n: number; snap: Record<string, unknown> }[] = [];
  const fedNoisy: Record<string, unknown>[] = [];
  const t0 = Math.floor(Date.now() / 1000) - 700;

  beforeAll(async () => {
    cp = await startCP();
    const a = await SimAgent.connect(cp.ws);
    leakKey = (await a.hello(identityOf({ pid: 1101, worker_id: 0 }))).worker_key;
    const b = await SimAgent.connect(cp.ws);
    noisyKey = (await b.hello(identityOf({ pid: 1102, worker_id: 1 }))).worker_key;
    for (let i = 0; i <= 60; i++) {
      const l = leakSnap(1101, i, t0);
      fedLeak.push(l);
      expect(await a.push(i + 1, l.snap)).toEqual({ type: "ack", seq: i + 1 });
      const nz = noisySnap(1102, i, t0);
      fedNoisy.push(nz);
      expect(await b.push(i + 1, nz)).toEqual({ type: "ack", seq: i + 1 });
    }
    // the agents stay connected (live) for the rest of the file
    (cp as unknown as { agents: SimAgent[] }).agents = [a, b];
  });
  afterAll(async () => {
    for (const a of (cp as unknown as { agents: SimAgent[] }).agents) await a.close();
    await cp.stop();
  });

  test("workers list both live workers of the instance", async () => {
    const r = await getJson(`${cp.base}/api/workers`);
    expect(r.status).toBe(200);
    expect(r.body.map((w: any) => [w.key, w.state, w.snapshots, w.instance])).toEqual([
      [leakKey, "live", 61, FIXTURE_INSTANCE],
      [noisyKey, "live", 61, FIXTURE_INSTANCE],
    ]);
    expect(r.body[0].rss_bytes).toBe((fedLeak[60].snap.system as any).rss_bytes);
  });

  test("the growing unrooted group is the top suspect with the fed slope; the bounded worker has none", async () => {
    const r = await getJson(`${cp.base}/api/suspects?window=10m`);
    expect(r.status).toBe(200);
    const top = r.body[0];
    expect(top).toMatchObject({ worker: leakKey, instance: FIXTURE_INSTANCE, owner: OWNER, metric: "pool.unrooted.16384|ngx_x_cleanup|x.so.bss+0x40.bytes", window_s: 600 });
    // ground truth: +2 pools per 30 s on deep snapshots = 4 pools/min × PER_POOL bytes, an exact line
    expect(top.growth_bytes_per_min).toBeCloseTo(4 * PER_POOL, 4);
    expect(top.r2).toBeCloseTo(1, 9);
    expect(top.delta_count).toBe(fedLeak[60].n - fedLeak[0].n);
    expect(top.evidence).toBe(`unrooted pools held by ${OWNER}: +40 pools, +12.1 MB in 10 min (1.2 MB/min, R² 1.00); 256–512 KB chunks +40`);
    expect(r.body.filter((s: any) => s.worker === noisyKey)).toEqual([]);
    expect((await getJson(`${cp.base}/api/suspects?worker=${enc(noisyKey)}`)).body).toEqual([]);
  });

  test("diff of two snapshots equals the hand-computed differences", async () => {
    const snaps = (await getJson(`${cp.base}/api/workers/${enc(leakKey)}/snapshots?limit=100`)).body;
    const bySeq = new Map<number, number>(snaps.map((s: any) => [s.seq, s.id]));
    const [ia, ib] = [bySeq.get(1)!, bySeq.get(61)!]; // both deep (i = 0 and 60)
    const r = await getJson(`${cp.base}/api/diff?a=${ia}&b=${ib}`);
    expect(r.status).toBe(200);
    const rows = Object.fromEntries(r.body.rows.map((x: any) => [x.key, x]));
    const A = fedLeak[0], B = fedLeak[60];
    const sa = A.snap.system as any, sb = B.snap.system as any;
    expect(rows["system.rss_bytes"]).toMatchObject({ a_bytes: sa.rss_bytes, b_bytes: sb.rss_bytes, delta_bytes: sb.rss_bytes - sa.rss_bytes });
    expect(rows["pool.unrooted.16384|ngx_x_cleanup|x.so.bss+0x40"]).toMatchObject({
      a_bytes: A.n * PER_POOL, b_bytes: B.n * PER_POOL, delta_bytes: (B.n - A.n) * PER_POOL, a_count: A.n, b_count: B.n, delta_count: B.n - A.n,
      label: `unrooted pools held by ${OWNER}`,
    });
    expect(rows["size_class.262144"].delta_count).toBe(B.n - A.n);
    expect(rows["size_class.262144"].delta_bytes).toBe((B.n - A.n) * LARGE);
    expect(r.body.rows[0].key).toBe("pool.unrooted.16384|ngx_x_cleanup|x.so.bss+0x40");
    expect(r.body.a).toMatchObject({ id: ia, worker: leakKey, time: t0 });
  });

  test("diff of an instance between two times sums its workers", async () => {
    const from = t0 + 5, to = t0 + 600; // latest at or before: i = 0 and i = 60
    const r = await getJson(`${cp.base}/api/diff?instance=${enc(FIXTURE_INSTANCE)}&from=${from}&to=${to}`);
    expect(r.status).toBe(200);
    const rss = r.body.rows.find((x: any) => x.key === "system.rss_bytes");
    const sum = (i: number) => (fedLeak[i].snap.system as any).rss_bytes + (fedNoisy[i].system as any).rss_bytes;
    expect(rss).toMatchObject({ a_bytes: sum(0), b_bytes: sum(60), delta_bytes: sum(60) - sum(0) });
    // per worker between times; from before the first deep part takes the deep overlay of the latest deep one
    const w = await getJson(`${cp.base}/api/diff?worker=${enc(leakKey)}&from=${t0 + 15}&to=${t0 + 595}`);
    const g = w.body.rows.find((x: any) => x.key.startsWith("pool.unrooted."));
    expect(g).toMatchObject({ a_count: fedLeak[0].n, b_count: fedLeak[57].n }); // deep snapshots at i = 0 and i = 57
  });

  test("series of a metric, metric names, single snapshot", async () => {
    const r = await getJson(`${cp.base}/api/series?worker=${enc(leakKey)}&metric=system.rss_bytes&from=${t0}&to=${t0 + 95}`);
    expect(r.body.points).toEqual(fedLeak.slice(0, 10).map((l) => [l.snap.time, (l.snap.system as any).rss_bytes]));
    const names = (await getJson(`${cp.base}/api/metrics/names`)).body;
    expect(names).toContain("luajit.gc_bytes");
    expect(names).toContain("size_class.262144.chunks");
  });

  test("/metrics is Prometheus text with the latest values per worker", async () => {
    const res = await fetch(`${cp.base}/metrics`);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parseProm(await res.text());
    const get = (name: string, l: Record<string, string>) =>
      samples.filter((s) => s.name === name && Object.entries(l).every(([k, v]) => s.labels[k] === v));
    const last = fedLeak[60].snap as any;
    expect(get("memdiag_system_rss_bytes", { worker: leakKey })).toEqual([
      { name: "memdiag_system_rss_bytes", labels: { nginx_instance: FIXTURE_INSTANCE, worker: leakKey, pid: "1101", host: "gw1" }, value: last.system.rss_bytes },
    ]);
    expect(get("memdiag_system_rss_bytes", { worker: noisyKey })[0].value).toBe((fedNoisy[60].system as any).rss_bytes);
    expect(get("memdiag_unrooted_pools", { worker: leakKey, owner: OWNER })[0].value).toBe(fedLeak[60].n);
    expect(get("memdiag_size_class_chunks", { worker: leakKey, min_bytes: "262144" })[0].value).toBe(last.glibc.size_classes.find((c: any) => c.min_bytes === 262144).chunks);
    expect(get("memdiag_shm_used_bytes", { worker: noisyKey, zone: "cache" })[0].value).toBe(60 * MB);
    expect(get("memdiag_pool_pools", { worker: noisyKey, kind: "request" })[0].value).toBe((fedNoisy[60].pools as any).groups[2].pools);
    expect(get("memdiag_workers", { state: "live" })[0].value).toBe(2);
    expect(get("memdiag_ingest_snapshots_total", {})[0].value).toBe(122);
  });

  test("unknown or repeated query parameters are a 400 that lists the valid ones", async () => {
    const r = await getJson(`${cp.base}/api/suspects?windw=10m`);
    expect(r.status).toBe(400);
    expect(r.body.error).toBe("unknown parameter 'windw'; valid: window, instance, worker");
    expect((await getJson(`${cp.base}/api/workers?state=live&state=gone`)).status).toBe(400);
    expect((await getJson(`${cp.base}/api/diff?a=1`)).status).toBe(400);
    expect((await getJson(`${cp.base}/api/diff?a=1&b=99999`)).status).toBe(404);
    expect((await getJson(`${cp.base}/api/series?worker=${enc(leakKey)}&metric=nope`)).status).toBe(404);
    expect((await getJson(`${cp.base}/metrics?x=1`)).status).toBe(400);
    expect((await getJson(`${cp.base}/api/nope`)).status).toBe(404);
  });

  test("a command reaches the agent; its result is relayed to consoles and to GET /api/commands/:id", async () => {
    const agent = (cp as unknown as { agents: SimAgent[] }).agents[0];
    const con = new WebSocket(`${cp.ws}/live`);
    const results: any[] = [];
    const got = new Promise<any>((res) => con.on("message", (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === "command_result") res(m);
      results.push(m);
    }));
    await new Promise((r) => con.once("open", r));
    const post = await fetch(`${cp.base}/api/workers/${enc(leakKey)}/command`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ command: "deep" }) });
    expect(post.status).toBe(202);
    const st = await post.json();
    const cmd = await agent.nextOf("command");
    expect(cmd).toEqual({ type: "command", id: st.id, command: "deep" });
    agent.send({ type: "command_result", id: st.id, ok: true });
    expect(await got).toEqual({ type: "command_result", id: st.id, worker: leakKey, command: "deep", ok: true });
    expect((await getJson(`${cp.base}/api/commands/${st.id}`)).body).toMatchObject({ state: "done", worker: leakKey, command: "deep" });
    // the console got the current state first: one update per live worker, then suspects
    expect(results.slice(0, 3).map((m) => m.type)).toEqual(["snapshot", "snapshot", "suspects"]);
    con.close();
    const bad = await fetch(`${cp.base}/api/workers/${enc(leakKey)}/command`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ command: "rm -rf" }) });
    expect(bad.status).toBe(400);
  });
});

describe("control plane auth beyond loopback", () => {
  const ip = Object.values(os.networkInterfaces()).flat().find((i) => i && i.family === "IPv4" && !i.internal)?.address;
  const TOKEN = "tok-" + "x".repeat(20);
  (ip ? test : test.skip)("non-loopback clients need the bearer token (API, /metrics, /live); loopback does not", async () => {
    const cp = await startCP({ host: "0.0.0.0", token: TOKEN });
    const port = cp.cp.port;
    const remote = `http://${ip}:${port}`;
    expect((await getJson(`${remote}/api/workers`)).status).toBe(401);
    expect((await getJson(`${remote}/metrics`)).status).toBe(401);
    expect((await getJson(`${remote}/api/workers`, { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await getJson(`${remote}/api/workers`, { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    expect((await getJson(`${remote}/metrics`, { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    const basic = Buffer.from(`any:${TOKEN}`).toString("base64");
    expect((await getJson(`${remote}/api/health`, { authorization: `Basic ${basic}` })).status).toBe(200);
    expect((await getJson(`http://127.0.0.1:${port}/api/workers`)).status).toBe(200);
    const denied = await new Promise<string>((res) => {
      const ws = new WebSocket(`ws://${ip}:${port}/live`);
      ws.on("error", (e) => res(e.message));
      ws.on("open", () => res("open"));
    });
    expect(denied).toMatch(/401/);
    const ok = await new Promise<string>((res) => {
      const ws = new WebSocket(`ws://${ip}:${port}/live`, [`bearer.${TOKEN}`]);
      ws.on("error", (e) => res(e.message));
      ws.on("open", () => { ws.close(); res("open"); });
    });
    expect(ok).toBe("open");
    expect(cp.logs.join("\n")).not.toContain(TOKEN);
    await cp.stop();
  });
});
