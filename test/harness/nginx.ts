/**
 * Starts a real nginx (Debian's binary with lua-nginx-module loaded dynamically, or the
 * OpenResty / Tengine build selected by MEMDIAG_PLATFORM: harness/platform.ts) in a
 * private prefix with the memdiag include, on ephemeral loopback ports, and
 * stops it without leaving a process behind.
 */
import { ChildProcess, spawn, execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as http from "http";
import { freePort } from "./ports";
import { renderConf } from "../../scripts/render-conf";
import { AgentOptions, ROOT } from "../../scripts/config";

import { PLATFORM, workerUserDirective } from "./platform";

export const NGINX_BIN = PLATFORM.nginx;

export interface NginxOptions {
  workers?: number;
  workerConnections?: number;
  agent?: AgentOptions;
  dictSize?: string;
  /** extra directives in the main context (load_module of fixtures, ...) */
  main?: string;
  /** extra directives inside http {} */
  http?: string;
  /** locations of the test app server (listens on appPort) */
  appLocations?: string;
  /** locations added to the memdiag server (listens on memdiagPort) */
  memdiagLocations?: string;
}

export interface HttpResult {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

export function httpGet(port: number, pathAndQuery: string, timeoutMs = 10000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: pathAndQuery, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8"), headers: res.headers }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${pathAndQuery} timed out`)));
    req.on("error", reject);
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Nginx {
  prefix = "";
  memdiagPort = 0;
  appPort = 0;
  private proc?: ChildProcess;
  private stderr = "";

  constructor(public readonly opts: NginxOptions = {}) {}

  get confFile(): string {
    return path.join(this.prefix, "conf", "nginx.conf");
  }

  get masterPid(): number {
    return this.proc?.pid ?? 0;
  }

  async start(): Promise<void> {
    this.prefix = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-nginx-"));
    fs.chmodSync(this.prefix, 0o755);
    for (const d of ["conf", "logs", "tmp"]) fs.mkdirSync(path.join(this.prefix, d));
    this.memdiagPort = await freePort();
    this.appPort = await freePort();
    this.writeConf();
    this.proc = spawn(NGINX_BIN, ["-p", this.prefix, "-c", this.confFile, "-g", "daemon off;"], { stdio: ["ignore", "ignore", "pipe"] });
    this.proc.stderr!.on("data", (d) => (this.stderr += d.toString()));
    await this.waitReady();
  }

  /** Rewrite the config from options (e.g. after changing agent options) — call reload() after. */
  writeConf(): void {
    const o = this.opts;
    const memdiag = renderConf({
      listen: `127.0.0.1:${this.memdiagPort}`,
      dictSize: o.dictSize ?? "16m",
      agent: { layouts_dir: path.join(ROOT, "layouts"), interval_s: 1, ...o.agent },
      extraLocations: o.memdiagLocations,
    });
    fs.writeFileSync(path.join(this.prefix, "conf", "memdiag.conf"), memdiag);
    const user = workerUserDirective();
    const conf = `
${user}
${PLATFORM.loadModules}
${o.main ?? ""}
worker_processes ${o.workers ?? 2};
worker_shutdown_timeout 10s;
error_log ${path.join(this.prefix, "logs", "error.log")} info;
pid ${path.join(this.prefix, "logs", "nginx.pid")};
events { worker_connections ${o.workerConnections ?? 1024}; }
http {
  access_log off;
  client_body_temp_path ${path.join(this.prefix, "tmp")};
  proxy_temp_path ${path.join(this.prefix, "tmp")};
  fastcgi_temp_path ${path.join(this.prefix, "tmp")};
  uwsgi_temp_path ${path.join(this.prefix, "tmp")};
  scgi_temp_path ${path.join(this.prefix, "tmp")};
  include memdiag.conf;
  ${o.http ?? ""}
  server {
    listen 127.0.0.1:${this.appPort};
    keepalive_timeout 120s;
    keepalive_requests 100000;
    location = /ok { return 200 "ok\\n"; }
    ${o.appLocations ?? ""}
  }
}
`;
    fs.writeFileSync(this.confFile, conf);
  }

  errorLog(): string {
    const f = path.join(this.prefix, "logs", "error.log");
    return fs.existsSync(f) ? fs.readFileSync(f, "utf8") : "";
  }

  /** Error-log lines at [error] or worse, plus worker crashes reported by the master. */
  errors(): string[] {
    return this.errorLog()
      .split("\n")
      .filter((l) => /\[(error|crit|alert|emerg)\]/.test(l) || /exited on signal/.test(l));
  }

  workerPids(): number[] {
    if (!this.proc?.pid) return [];
    try {
      const out = execFileSync("pgrep", ["-P", String(this.proc.pid)], { encoding: "utf8" });
      return out.split("\n").filter(Boolean).map(Number).sort((a, b) => a - b);
    } catch {
      return [];
    }
  }

  async memdiag(query = ""): Promise<HttpResult> {
    return httpGet(this.memdiagPort, `/_memdiag${query}`);
  }

  /** Snapshots of all workers, waiting until every current worker has published one. */
  async snapshots(timeoutMs = 15000, minSeq = 1): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    let last: any[] = [];
    while (Date.now() < deadline) {
      const pids = this.workerPids();
      const r = await this.memdiag().catch(() => undefined);
      if (r && r.status === 200) {
        last = JSON.parse(r.body).workers;
        const byPid = new Map(last.map((w: any) => [w.pid, w]));
        if (pids.length > 0 && pids.every((p) => byPid.has(p) && byPid.get(p).seq >= minSeq)) {
          return pids.map((p) => byPid.get(p));
        }
      }
      await sleep(100);
    }
    throw new Error(`not every worker published a snapshot in ${timeoutMs} ms; got pids ${last.map((w) => w.pid)}; log:\n${this.errorLog().slice(-3000)}`);
  }

  /** A snapshot of `pid` taken strictly after now (waits for the worker's next collection). */
  async nextSnapshotOf(pid: number, timeoutMs = 15000): Promise<any> {
    const start = Date.now() / 1000;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await this.memdiag(`?pid=${pid}`).catch(() => undefined);
      if (r && r.status === 200) {
        const w = JSON.parse(r.body).workers[0];
        if (w && w.time > start) return w;
      }
      await sleep(100);
    }
    throw new Error(`no fresh snapshot of ${pid} within ${timeoutMs} ms`);
  }

  async reload(): Promise<void> {
    const before = this.workerPids();
    this.writeConf();
    process.kill(this.masterPid, "SIGHUP");
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      const now = this.workerPids();
      if (now.length >= (this.opts.workers ?? 2) && now.every((p) => !before.includes(p))) return;
      await sleep(100);
    }
    throw new Error("reload: old workers did not go away");
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    p.kill("SIGQUIT");
    const t = setTimeout(() => p.kill("SIGKILL"), 10000);
    await exited;
    clearTimeout(t);
    // workers die with the master; make sure no orphan survives
    for (let i = 0; i < 50; i++) {
      try {
        execFileSync("pgrep", ["-f", this.prefix]);
      } catch {
        break;
      }
      await sleep(100);
    }
    if (!process.env.MEMDIAG_KEEP_PREFIX) fs.rmSync(this.prefix, { recursive: true, force: true });
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      if (this.proc!.exitCode !== null) throw new Error(`nginx exited: ${this.stderr}\n${this.errorLog()}`);
      const r = await httpGet(this.appPort, "/ok", 1000).catch(() => undefined);
      if (r && r.status === 200 && this.workerPids().length >= (this.opts.workers ?? 2)) return;
      await sleep(50);
    }
    throw new Error(`nginx did not come up: ${this.stderr}\n${this.errorLog()}`);
  }
}

/**
 * An nginx whose agent runs without the native sampler library (not built, or no
 * compiler): the agent's Lua is copied to a folder with no build/native next to it,
 * and the memdiag include points there. stop() removes the copy.
 */
export class NoNativeNginx extends Nginx {
  luaCopy = "";

  writeConf(): void {
    super.writeConf();
    const built = path.join(ROOT, "build", "lua");
    if (!this.luaCopy) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-nonative-"));
      fs.chmodSync(dir, 0o755);
      this.luaCopy = path.join(dir, "lua");
      fs.cpSync(built, this.luaCopy, { recursive: true });
    }
    const f = path.join(this.prefix, "conf", "memdiag.conf");
    fs.writeFileSync(f, fs.readFileSync(f, "utf8").split(built).join(this.luaCopy));
  }

  async stop(): Promise<void> {
    await super.stop();
    if (this.luaCopy) fs.rmSync(path.dirname(this.luaCopy), { recursive: true, force: true });
  }
}

/** /proc/<pid>/status memory figures in bytes, read by the test process (ground truth). */
export function procStatus(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n")) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]) * 1024;
  }
  return out;
}

/**
 * The same nginx without the memdiag include line (same modules loaded): the baseline the
 * benchmarks and drills compare with.
 */
export class BareNginx extends Nginx {
  writeConf(): void {
    super.writeConf();
    const conf = fs.readFileSync(this.confFile, "utf8").replace(/^\s*include memdiag\.conf;\s*$/m, "");
    if (conf.includes("memdiag.conf")) throw new Error("could not remove the include line");
    fs.writeFileSync(this.confFile, conf);
  }
}
