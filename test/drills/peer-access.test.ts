/**
 * /_memdiag decides on the connection's own address, not one a client writes (issue 24).
 * A gateway behind a load balancer trusts it with `set_real_ip_from <subnet>;
 * real_ip_header X-Forwarded-For|proxy_protocol;` at http level, which memdiag's server
 * inherits. From a network namespace of the test's own (a real non-loopback peer in that
 * subnet), with /whoami on the same server showing that realip really rewrote $remote_addr:
 *  - not allowlisted: plain, X-Forwarded-For: 127.0.0.1, X-Forwarded-For: <an allowlisted
 *    address>, and a PROXY v1 header claiming either, are all 403; nothing is armed;
 *  - allowlisted: snapshots 200; sampler=arm/disarm/clear, deep=1, fresh=1 (also handed to
 *    another worker with pid=N or sampler_all=1) 401 without the token, and a claimed
 *    loopback address does not stand in for it; 200 with it; without a configured token
 *    403 with what to do;
 *  - loopback clients: everything without a token, as before.
 * Ground truth: the workers' /proc/<pid>/maps (is the sampler library loaded?), the
 * snapshots' seq (interval 600 s: only fresh/deep collections move it) and scan.started.
 * Namespaces need root (skipped otherwise).
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { Nginx, httpGet } from "../harness/nginx";
import { freePort } from "../harness/ports";
import { ensureSampler } from "../harness/fixtures";
import { ROOT } from "../../scripts/config";
import { VethNamespace, tally } from "./lib";

const isRoot = process.getuid?.() === 0;
const ns = new VethNamespace("mdp", 214);
/** an address on the allow list that the client is not */
const LISTED = "192.0.2.7";
const XFF = `set_real_ip_from ${ns.subnet}; real_ip_header X-Forwarded-For;`;
const PROXY = `set_real_ip_from ${ns.subnet}; real_ip_header proxy_protocol;`;

/** memdiag's server also listens on the veth address, plainly and with PROXY protocol */
class GatewayNginx extends Nginx {
  proxyPort = 0;
  writeConf(): void {
    super.writeConf();
    const f = path.join(this.prefix, "conf", "memdiag.conf");
    const conf = fs
      .readFileSync(f, "utf8")
      .replace(/(\n\s*listen 127\.0\.0\.1:(\d+);)/, `$1\n    listen ${ns.hostIp}:$2;\n    listen ${ns.hostIp}:${this.proxyPort} proxy_protocol;`);
    fs.writeFileSync(f, conf);
  }
  async start(): Promise<void> {
    this.proxyPort = await freePort();
    return super.start();
  }
}

/** One HTTP/1.0 request (no chunked answer to decode) preceded by a PROXY v1 header claiming `claimed`, sent from inside the namespace. */
function proxied(port: number, claimed: string, pathAndQuery: string, headers: string[] = []): { status: number; body: string } {
  const req = `PROXY TCP4 ${claimed} ${ns.hostIp} 40000 ${port}\r\nGET ${pathAndQuery} HTTP/1.0\r\nHost: memdiag\r\n${headers.map((h) => h + "\r\n").join("")}Connection: close\r\n\r\n`;
  const script = `const s = require("net").connect(${port}, ${JSON.stringify(ns.hostIp)}, () => s.write(process.argv[1]));
    let b = ""; s.on("data", (d) => (b += d)); s.on("close", () => process.stdout.write(b)); s.on("error", () => undefined); s.setTimeout(10000, () => s.destroy());`;
  const out = ns.run(process.execPath, ["-e", script, req]).stdout ?? "";
  const h = out.indexOf("\r\n\r\n");
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(out)?.[1] ?? 0), body: h < 0 ? out : out.slice(h + 4) };
}

/**
 * /whoami: both addresses as nginx sees them (is realip rewriting?). /novar: what the lua
 * module gives for a variable no module defines, which is what $realip_remote_addr reads
 * as in a build without realip.
 */
const WHOAMI = `    location = /whoami { return 200 "$remote_addr $realip_remote_addr"; }
    location = /novar { content_by_lua_block { local ok, v = pcall(function() return ngx.var.memdiag_no_such_variable end); ngx.print(tostring(ok), " ", tostring(v)) } }
`;

const d = isRoot ? describe : describe.skip;

d("/_memdiag access by the connection's own address", () => {
  const cases: { name: string; ok: boolean; detail: string }[] = [];
  const add = (name: string, ok: boolean, detail = "") => {
    cases.push({ name, ok, detail });
    if (!ok) console.log(`FAILED: ${name}: ${detail}`);
  };
  const token = crypto.randomBytes(16).toString("hex");
  let ngx: GatewayNginx;
  let url = "";
  let whoami = "";

  /** workers with the sampler library mapped, from their /proc/<pid>/maps */
  const loadedIn = () => ngx.workerPids().filter((p) => fs.readFileSync(`/proc/${p}/maps`, "utf8").includes("libmemdiag_sampler"));
  /** every worker's snapshot seq and deep-scan start, read over loopback */
  const state = async () => {
    const ws = JSON.parse((await ngx.memdiag()).body).workers as any[];
    return ws.map((w) => `${w.pid}:${w.seq}:${w.scan?.started ?? "-"}`).sort().join(" ");
  };
  const reconfigure = async (http: string, allow: string[], tok: string) => {
    ngx.opts.http = http;
    ngx.opts.agent!.allow = allow;
    ngx.opts.agent!.token = tok;
    await ngx.reload();
    await ngx.snapshots();
  };

  beforeAll(async () => {
    ensureSampler();
    ns.up();
    ngx = new GatewayNginx({ workers: 2, http: XFF, agent: { interval_s: 600, allow: [LISTED], token }, memdiagLocations: WHOAMI });
    await ngx.start();
    await ngx.snapshots();
    url = `http://${ns.hostIp}:${ngx.memdiagPort}/_memdiag`;
    whoami = `http://${ns.hostIp}:${ngx.memdiagPort}/whoami`;
  }, 60000);

  afterAll(async () => {
    await ngx?.stop();
    ns.down();
    tally("/_memdiag access by peer", cases.length, cases.filter((c) => c.ok).length);
  });

  test("not allowlisted, realip trusting X-Forwarded-For: every spoof 403, nothing armed", async () => {
    const from = cases.length;
    const before = await state();
    const nv = await httpGet(ngx.memdiagPort, "/novar");
    add("an undefined variable reads as nil, no error (the no-realip path)", nv.body === "true nil" && !/memdiag_no_such_variable/.test(ngx.errorLog()), nv.body);
    let w = ns.curl(whoami);
    add("precondition: plain request, $remote_addr is the namespace", w.body === `${ns.nsIp} ${ns.nsIp}`, w.body);
    let r = ns.curl(url);
    add("plain → 403", r.status === 403 && /not allowed/.test(r.body), `${r.status} ${r.body}`);

    w = ns.curl(whoami, ["X-Forwarded-For: 127.0.0.1"]);
    add("precondition: X-Forwarded-For: 127.0.0.1 rewrites $remote_addr", w.body === `127.0.0.1 ${ns.nsIp}`, w.body);
    for (const q of ["", "?sampler=status", "?sampler=arm", "?deep=1", "?fresh=1"]) {
      r = ns.curl(url + q, ["X-Forwarded-For: 127.0.0.1"]);
      add(`X-Forwarded-For: 127.0.0.1 ${q || "snapshot"} → 403`, r.status === 403 && r.body.includes(ns.nsIp), `${r.status} ${r.body}`);
    }
    w = ns.curl(whoami, [`X-Forwarded-For: ${LISTED}`]);
    add("precondition: X-Forwarded-For: <allowlisted> rewrites $remote_addr", w.body === `${LISTED} ${ns.nsIp}`, w.body);
    for (const q of ["", "?sampler=arm"]) {
      r = ns.curl(url + q, [`X-Forwarded-For: ${LISTED}`, `Authorization: Bearer ${token}`]);
      add(`X-Forwarded-For: <allowlisted> ${q || "snapshot"} (even with the token) → 403`, r.status === 403, `${r.status} ${r.body}`);
    }
    for (const pid of ngx.workerPids()) {
      r = ns.curl(`${url}?sampler=arm&pid=${pid}`, ["X-Forwarded-For: 127.0.0.1"]);
      add(`X-Forwarded-For: 127.0.0.1, sampler=arm handed to pid=${pid} → 403`, r.status === 403, `${r.status} ${r.body}`);
    }
    add("no worker loaded the sampler", loadedIn().length === 0, JSON.stringify(loadedIn()));
    add("no collection or deep scan ran", (await state()) === before, `${before} → ${await state()}`);
    expect(cases.slice(from).filter((c) => !c.ok)).toEqual([]);
  }, 120000);

  test("not allowlisted, realip trusting PROXY protocol: claims of 127.0.0.1 or an allowlisted address 403", async () => {
    const from = cases.length;
    await reconfigure(PROXY, [LISTED], token);
    const before = await state();
    const w = proxied(ngx.proxyPort, "127.0.0.1", "/whoami");
    add("precondition: PROXY 127.0.0.1 rewrites $remote_addr", w.status === 200 && w.body === `127.0.0.1 ${ns.nsIp}`, `${w.status} ${w.body}`);
    for (const [claimed, q] of [["127.0.0.1", ""], ["127.0.0.1", "?sampler=arm"], ["127.0.0.1", "?deep=1"], [LISTED, ""], [LISTED, "?fresh=1"]]) {
      const r = proxied(ngx.proxyPort, claimed, `/_memdiag${q}`);
      add(`PROXY claiming ${claimed} ${q || "snapshot"} → 403`, r.status === 403 && r.body.includes(ns.nsIp), `${r.status} ${r.body}`);
    }
    add("no worker loaded the sampler", loadedIn().length === 0, JSON.stringify(loadedIn()));
    add("no collection or deep scan ran", (await state()) === before, `${before} → ${await state()}`);
    // allowlisted, over PROXY claiming loopback: may read, but is not loopback for changes
    await reconfigure(PROXY, [ns.nsIp], token);
    let r = proxied(ngx.proxyPort, "127.0.0.1", "/_memdiag");
    add("allowlisted over PROXY: snapshot → 200", r.status === 200 && JSON.parse(r.body).workers.length >= 2, `${r.status}`);
    r = proxied(ngx.proxyPort, "127.0.0.1", "/_memdiag?sampler=arm");
    add("allowlisted over PROXY claiming 127.0.0.1: sampler=arm without the token → 401", r.status === 401, `${r.status} ${r.body}`);
    add("still no worker loaded the sampler", loadedIn().length === 0, JSON.stringify(loadedIn()));
    expect(cases.slice(from).filter((c) => !c.ok)).toEqual([]);
  }, 120000);

  test("allowlisted: reads 200; changes 401 without the token, 200 with it", async () => {
    const from = cases.length;
    await reconfigure(XFF, [ns.nsIp], token);
    const pids = ngx.workerPids();
    const before = await state();
    let r = ns.curl(url);
    add("snapshot → 200 with every worker", r.status === 200 && pids.every((p) => JSON.parse(r.body).workers.some((w: any) => w.pid === p)), `${r.status}`);
    // reads are served (sampler=top before any arm: 409 "never armed", not a refusal)
    for (const [q, want] of [["sampler=status", 200], ["sampler=top", 409], ["sampler=status&sampler_all=1", 200], [`sampler=status&pid=${pids[0]}`, 200], [`sampler=status&pid=${pids[1]}`, 200], ["push=1", 200]] as [string, number][]) {
      r = ns.curl(`${url}?${q}`);
      add(`read ${q} → ${want}`, r.status === want, `${r.status} ${r.body.slice(0, 120)}`);
    }
    const changing = ["sampler=arm", "sampler=disarm", "sampler=clear", "sampler=arm&sampler_all=1", `sampler=arm&pid=${pids[0]}`, `sampler=arm&pid=${pids[1]}`, "sampler=got", "deep=1", "fresh=1", "sampler=bogus"];
    for (const q of changing) {
      r = ns.curl(`${url}?${q}`);
      add(`${q} without the token → 401 + WWW-Authenticate`, r.status === 401 && /Bearer/.test(r.headers["www-authenticate"] ?? "") && /Authorization: Bearer/.test(r.body), `${r.status} ${r.body}`);
    }
    for (const h of [[`Authorization: Bearer ${token}x`], [`Authorization: Bearer ${token.slice(0, -1)}`], [`Authorization: Basic ${token}`], ["X-Forwarded-For: 127.0.0.1"], ["X-Forwarded-For: 127.0.0.1", `Authorization: Bearer ${token.toUpperCase()}`]]) {
      r = ns.curl(`${url}?sampler=arm`, h);
      add(`sampler=arm with ${h.join(", ").replace(token, "<token>")} → 401`, r.status === 401, `${r.status} ${r.body}`);
    }
    r = ns.curl(`${url}?sampler=arm&token=${token}`);
    add("the token in the URL → 400 (not a parameter)", r.status === 400, `${r.status}`);
    add("refused: no worker loaded the sampler", loadedIn().length === 0, JSON.stringify(loadedIn()));
    add("refused: no collection or deep scan ran", (await state()) === before, `${before} → ${await state()}`);
    add("the token appears in no answer or log", !r.body.includes(token) && !ngx.errorLog().includes(token));

    const auth = [`Authorization: Bearer ${token}`];
    for (const pid of pids) {
      r = ns.curl(`${url}?sampler=arm&pid=${pid}`, auth);
      const b = r.status === 200 ? JSON.parse(r.body) : {};
      add(`sampler=arm&pid=${pid} with the token → 200, armed`, r.status === 200 && b.pid === pid && b.armed === true, `${r.status} ${r.body.slice(0, 200)}`);
    }
    add("with the token: both workers loaded the sampler", JSON.stringify(loadedIn()) === JSON.stringify(pids), JSON.stringify(loadedIn()));
    for (const pid of pids) {
      r = ns.curl(`${url}?sampler=disarm&pid=${pid}`, auth);
      add(`sampler=disarm&pid=${pid} with the token → 200`, r.status === 200 && JSON.parse(r.body).armed === false, `${r.status} ${r.body.slice(0, 200)}`);
    }
    r = ns.curl(`${url}?sampler=clear`, auth);
    add("sampler=clear with the token → 200", r.status === 200, `${r.status} ${r.body.slice(0, 200)}`);
    const s0 = await state();
    r = ns.curl(`${url}?fresh=1`, auth);
    const s1 = await state();
    add("fresh=1 with the token → 200 and a collection ran", r.status === 200 && s1 !== s0, `${r.status}; ${s0} → ${s1}`);
    const t0 = Date.now() / 1000;
    r = ns.curl(`${url}?deep=1`, auth, 120);
    const scanned = r.status === 200 ? JSON.parse(r.body).workers.filter((w: any) => w.scan?.state === "done" && w.scan.started >= t0 - 1) : [];
    add("deep=1 with the token → 200 with a scan started now", r.status === 200 && scanned.length === 1, `${r.status} ${r.body.slice(0, 200)}`);
    // `memdiag snapshot --fresh` from the namespace: the token from the environment, never on the command line
    const cli = (env: NodeJS.ProcessEnv) =>
      ns.run(process.execPath, [path.join(ROOT, "bin/memdiag"), "snapshot", "--fresh", "--json", "--host", ns.hostIp, "--port", String(ngx.memdiagPort)], { MEMDIAG_CONFIG: "/nonexistent/memdiag.config.json", MEMDIAG_TOKEN: "", ...env });
    let c = cli({});
    add("memdiag snapshot --fresh without a token → exit 1 naming the header", c.status === 1 && /401 .*Authorization: Bearer/.test(c.stderr), `${c.status} ${c.stderr}`);
    const s2 = await state();
    c = cli({ MEMDIAG_TOKEN: token });
    const s3 = await state();
    add("memdiag snapshot --fresh with MEMDIAG_TOKEN → exit 0 and a collection ran", c.status === 0 && JSON.parse(c.stdout).workers.length >= 2 && s3 !== s2, `${c.status} ${c.stderr}; ${s2} → ${s3}`);
    for (const pid of pids) {
      const st = JSON.parse((await ngx.memdiag(`?sampler=status&pid=${pid}`)).body);
      add(`worker ${pid} disarmed afterwards`, st.armed === false, JSON.stringify(st).slice(0, 200));
    }
    expect(cases.slice(from).filter((c) => !c.ok)).toEqual([]);
  }, 240000);

  test("no token configured: allowlisted clients read, changes 403 with what to do; loopback as before", async () => {
    const from = cases.length;
    await reconfigure(XFF, [ns.nsIp], "");
    let r = ns.curl(url);
    add("no token: snapshot → 200", r.status === 200, `${r.status}`);
    for (const q of ["sampler=arm", "deep=1", "fresh=1"]) {
      r = ns.curl(`${url}?${q}`, [`Authorization: Bearer ${token}`]);
      const msg = r.status === 403 ? JSON.parse(r.body).error : "";
      add(`no token: ${q} → 403 naming the fix`, /no token is configured/.test(msg) && /set "token" in memdiag\.config\.json/.test(msg), `${r.status} ${r.body}`);
    }
    // loopback, as before: no token needed (this nginx has none, the earlier one had one)
    for (const tok of ["", token]) {
      if (tok) await reconfigure(XFF, [ns.nsIp], tok);
      const pid = ngx.workerPids()[0];
      const s = await httpGet(ngx.memdiagPort, "/_memdiag");
      add(`loopback (token ${tok ? "set" : "unset"}): snapshot → 200`, s.status === 200, `${s.status}`);
      const a = await httpGet(ngx.memdiagPort, `/_memdiag?sampler=arm&pid=${pid}`);
      add(`loopback (token ${tok ? "set" : "unset"}): sampler=arm → 200`, a.status === 200 && JSON.parse(a.body).armed === true, `${a.status} ${a.body.slice(0, 200)}`);
      add(`loopback: worker ${pid} loaded the sampler`, loadedIn().includes(pid), JSON.stringify(loadedIn()));
      const x = await httpGet(ngx.memdiagPort, `/_memdiag?sampler=disarm&pid=${pid}`);
      add(`loopback (token ${tok ? "set" : "unset"}): sampler=disarm → 200`, x.status === 200 && JSON.parse(x.body).armed === false, `${x.status} ${x.body.slice(0, 200)}`);
      const f = await httpGet(ngx.memdiagPort, "/_memdiag?fresh=1");
      add(`loopback (token ${tok ? "set" : "unset"}): fresh=1 → 200`, f.status === 200, `${f.status}`);
    }
    add("no worker crashed", !/exited on signal/.test(ngx.errorLog()), "");
    expect(cases.slice(from).filter((c) => !c.ok)).toEqual([]);
  }, 120000);
});
