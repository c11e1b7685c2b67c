/**
 * The terminal consoles as a user runs them (bin/memdiag → dist/):
 *  - `memdiag console --once` against a real control plane (real HTTP + SQLite) fed
 *    over real websockets by simulated agents: workers, layers and the top suspect,
 *    every line within 80 columns;
 *  - `memdiag snapshot` against a real nginx with the memdiag include: a table with
 *    the worker pids (ground truth: the nginx master's children).
 */
import { execFile, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { startCP, RunningCP } from "../harness/control-plane";
import { SimAgent, simSnapshot, LEAK_OWNER } from "../harness/sim-agent";
import { Nginx } from "../harness/nginx";
import { ROOT } from "../../control-plane/src/config-file";

const BIN = path.join(ROOT, "bin", "memdiag");

function memdiag(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, NO_COLOR: "1", MEMDIAG_CONFIG: "/nonexistent/memdiag.config.json", ...env }, timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const width = (s: string): number => Math.max(...s.split("\n").map((l) => [...l].length));

beforeAll(() => {
  // the commands run from dist/: build it when the sources are newer (the test command builds too)
  const js = path.join(ROOT, "dist/control-plane/src/console/terminal.js");
  const srcDir = path.join(ROOT, "control-plane/src/console");
  const newest = Math.max(...fs.readdirSync(srcDir).map((f) => fs.statSync(path.join(srcDir, f)).mtimeMs));
  if (!fs.existsSync(js) || fs.statSync(js).mtimeMs < newest) {
    require("child_process").execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", path.join(ROOT, "tsconfig.json")], { stdio: "inherit" });
  }
});

describe("memdiag console --once against a real control plane", () => {
  let cp: RunningCP;
  const LEAK_PID = 5101;
  const STEADY_PID = 5102;
  const agents: SimAgent[] = [];
  const now = Math.floor(Date.now() / 1000);

  beforeAll(async () => {
    cp = await startCP({ suspectsIntervalMs: 0 });
    for (const pid of [LEAK_PID, STEADY_PID]) {
      const a = new SimAgent(`${cp.ws}/ingest`, {
        host: "sim", instance: "sim:7:/gw/", pid, worker_id: pid - LEAK_PID, worker_start: now - 700, generation: 1, nginx_version: "1.22.1", agent_version: "0.1.0",
      });
      await a.connect();
      agents.push(a);
      // 40 deep snapshots over the last ~8 minutes; the leaking worker gains one pool (400 KB) each time
      for (let i = 0; i < 40; i++) {
        await a.send(simSnapshot({ pid, worker_id: pid - LEAK_PID, worker_start: now - 700, seq: i + 1, time: now - 480 + i * 12, leaked: pid === LEAK_PID ? 1 + i : 1, deep: true, jitter: (i % 2) * 8192, instance: "sim:7:/gw/" }));
      }
    }
  });
  afterAll(async () => {
    for (const a of agents) await a.close();
    await cp?.stop();
    if (cp) fs.rmSync(cp.dir, { recursive: true, force: true });
  });

  test("one frame: workers, the leaking worker's layers, the top suspect; 80 columns", async () => {
    const r = await memdiag(["console", "--url", cp.base, "--once"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = r.stdout;
    expect(width(out)).toBeLessThanOrEqual(80);
    expect(out).not.toMatch(/\x1b\[/); // no colour codes when not a terminal
    const lines = out.split("\n");
    // workers: both pids, live, the leaking one selected (it carries the top suspect)
    const w1 = lines.find((l) => l.includes(` ${LEAK_PID} `))!;
    const w2 = lines.find((l) => l.includes(` ${STEADY_PID} `))!;
    expect(w1).toMatch(/^▶ .* live .* MB .*\+\d+(\.\d)? MB/);
    expect(w2).toMatch(/^ {2}.* live/);
    // layers of the selected worker, with deltas since start and over the window
    expect(out).toContain(`LAYERS pid ${LEAK_PID}`);
    const rss = lines.find((l) => /^ {2}RSS /.test(l))!;
    expect(rss).toMatch(/MB +\+\d+(\.\d)? MB +\+\d+(\.\d)? MB$/);
    const unrooted = lines.find((l) => l.includes("unrooted pools ("))!;
    // 40 + 2 stable pools now, +39 over the window (the ground truth the agents sent)
    expect(unrooted).toMatch(/unrooted pools \(42 \+39\)/);
    expect(out).toMatch(/glibc mmapped/);
    expect(out).toMatch(/LuaJIT GC heap/);
    // the top suspect with its evidence
    const i = lines.findIndex((l) => l.startsWith("1. "));
    expect(i).toBeGreaterThan(0);
    expect(lines[i]).toContain("unrooted pools");
    expect(lines[i]).toContain(`pid ${LEAK_PID}`);
    const evidence = lines.slice(i + 1, i + 4).map((l) => l.trim()).join(" ");
    expect(evidence).toContain("ngx_http_leaky_upstream_module.so");
    expect(evidence).toMatch(/\+39 pools/);
    expect(evidence).toMatch(/256–512 KB chunks \+39/);
    expect(out.includes(LEAK_OWNER.slice(0, 30))).toBe(true);
  });

  test("--worker PID selects that worker; --window changes the columns", async () => {
    const r = await memdiag(["console", "--url", cp.base, "--once", "--worker", String(STEADY_PID), "--window", "5m"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`LAYERS pid ${STEADY_PID}`);
    expect(r.stdout).toMatch(/window 5m/);
    expect(r.stdout).toMatch(/Δ 5m/);
    const unrooted = r.stdout.split("\n").find((l) => l.includes("unrooted pools ("))!;
    expect(unrooted).toMatch(/unrooted pools \(3\) +\d+(\.\d)? KB +0 B +0 B/);
    expect(width(r.stdout)).toBeLessThanOrEqual(80);
  });

  test("interactive (in a pseudo-terminal): redraws, d asks the selected worker for a deep scan, q quits", async () => {
    // `script` (util-linux) gives the console a real pty, as over ssh
    const cmd = `${process.execPath} ${BIN} console --url ${cp.base} --window 10m`;
    const p = spawn("script", ["-qfec", cmd, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, MEMDIAG_CONFIG: "/nonexistent.json" } });
    let out = "";
    p.stdout.on("data", (d) => (out += d.toString()));
    const exited = new Promise<number>((r) => p.on("exit", (c) => r(c ?? -1)));
    const until = async (f: () => boolean, what: string): Promise<void> => {
      for (let i = 0; i < 300 && !f(); i++) await new Promise((r) => setTimeout(r, 100));
      if (!f()) throw new Error(`console never showed ${what}; output:\n${out.slice(-2000)}`);
    };
    const leak = agents[0];
    leak.onCommand = (c) => leak.commandResult(c.id, true);
    await until(() => out.includes("SUSPECTS") && out.includes("q quit"), "a frame");
    expect(out).toContain("\x1b[?1049h"); // alternate screen
    p.stdin.write("d");
    await until(() => leak.commands.length > 0, "a deep command at the agent");
    expect(leak.commands[0].command).toBe("deep");
    await until(() => /deep scan accepted by the worker/.test(out), "the command result");
    p.stdin.write("q");
    expect(await exited).toBe(0);
    expect(out).toContain("\x1b[?1049l"); // screen restored
  });

  test("an unreachable control plane or a bad flag is a clear error", async () => {
    const r = await memdiag(["console", "--url", "http://127.0.0.1:1", "--once"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/cannot reach the control plane at http:\/\/127\.0\.0\.1:1/);
    const bad = await memdiag(["console", "--once", "--bogus"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown argument '--bogus'/);
  });
});

describe("memdiag snapshot against a real nginx", () => {
  const ngx = new Nginx({ workers: 2 });
  beforeAll(() => ngx.start());
  afterAll(() => ngx.stop());

  test("a table with one column per worker pid, and RSS for each", async () => {
    await ngx.snapshots();
    const pids = ngx.workerPids();
    const r = await memdiag(["snapshot", "--port", String(ngx.memdiagPort)]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^nginx 1\.22\.1 · host .* · 2 workers$/);
    const head = lines.find((l) => l.includes("pid "))!;
    expect(head.match(/pid (\d+)/g)!.map((s) => Number(s.slice(4)))).toEqual(pids);
    const rss = lines.find((l) => l.startsWith("RSS "))!;
    expect(rss.match(/\d+(\.\d)? (KB|MB)/g)!.length).toBe(2);
    expect(lines.some((l) => l.startsWith("LuaJIT GC heap"))).toBe(true);
    expect(width(r.stdout)).toBeLessThanOrEqual(80);
  });

  test("--pid N --fresh shows that worker only; --json is the raw answer", async () => {
    const [pid] = ngx.workerPids();
    const r = await memdiag(["snapshot", "--port", String(ngx.memdiagPort), "--pid", String(pid), "--fresh"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/· 1 worker$/m);
    expect(r.stdout).toContain(`pid ${pid}`);
    const j = await memdiag(["snapshot", "--port", String(ngx.memdiagPort), "--json"]);
    expect(j.code).toBe(0);
    const body = JSON.parse(j.stdout);
    expect(body.workers.map((w: { pid: number }) => w.pid).sort((a: number, b: number) => a - b)).toEqual(ngx.workerPids());
  });

  test("nothing listening is a clear error", async () => {
    const r = await memdiag(["snapshot", "--port", "1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach nginx at http:\/\/127\.0\.0\.1:1\/_memdiag/);
  });
});
