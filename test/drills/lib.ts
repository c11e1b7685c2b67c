/**
 * Shared pieces of the failure drills (issue 6): case tally, a real control-plane
 * process (bin/memdiag serve, so that SIGKILL is real), an ack-sniffing TCP proxy
 * between agents and control plane, a bounded load generator, /proc readers.
 */
import Database from "better-sqlite3";
import { ChildProcess, execFileSync, spawn, spawnSync, SpawnSyncReturns } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { ROOT } from "../../scripts/config";
import { sleep } from "../harness/nginx";

/** MEMDIAG_DRILL_FULL=1: the full counts of the issue (50 reloads, 1,000 corruptions, ...) */
export const FULL = process.env.MEMDIAG_DRILL_FULL === "1";
export const pick = (ci: number, full: number): number => (FULL ? full : ci);
export const envNum = (name: string, def: number): number => (process.env[name] !== undefined ? Number(process.env[name]) : def);

/** set by scripts/drill.sh; unset (npm test): the counts are only printed */
export const TALLY = process.env.MEMDIAG_DRILL_TALLY;

/** One line per drill: how many cases were tried and how many the system survived (scripts/drill.sh sums them). */
export function tally(drill: string, tried: number, survived: number, note = ""): void {
  if (TALLY) {
    fs.mkdirSync(path.dirname(TALLY), { recursive: true });
    fs.appendFileSync(TALLY, JSON.stringify({ drill, tried, survived, note, at: new Date().toISOString() }) + "\n");
  }
  console.log(`drill ${drill}: ${survived}/${tried} survived${note ? ` (${note})` : ""}`);
}

/** dist/ is what bin/memdiag runs: rebuild it when the control-plane sources are newer. */
export function ensureDist(): void {
  const js = path.join(ROOT, "dist/control-plane/src/cli.js");
  const newest = (dir: string): number =>
    Math.max(...fs.readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : fs.statSync(path.join(dir, e.name)).mtimeMs)));
  const src = Math.max(newest(path.join(ROOT, "control-plane/src")), newest(path.join(ROOT, "schema")));
  if (!fs.existsSync(js) || fs.statSync(js).mtimeMs < src) {
    execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", path.join(ROOT, "tsconfig.json")], { stdio: "inherit" });
  }
}

/** The snapshot seqs a control-plane database holds, by worker key or by pid (read-only, the test's own view). */
export function storedSeqs(db: string, by: "key"): Map<string, Set<number>>;
export function storedSeqs(db: string, by: "pid"): Map<number, Set<number>>;
export function storedSeqs(db: string, by: "key" | "pid"): Map<string | number, Set<number>> {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const out = new Map<string | number, Set<number>>();
    const rows = d.prepare(`SELECT w.${by} AS k, s.seq AS seq FROM snapshots s JOIN workers w ON w.id = s.worker`).all() as { k: string | number; seq: number }[];
    for (const r of rows) {
      if (!out.has(r.k)) out.set(r.k, new Set());
      out.get(r.k)!.add(r.seq);
    }
    return out;
  } finally {
    d.close();
  }
}

export function tempDir(prefix = "memdiag-drill-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** `memdiag serve` as its own process. */
export class CPProcess {
  proc?: ChildProcess;
  log = "";
  constructor(public readonly port: number, public readonly db: string, public readonly token = "", public readonly extra: string[] = [], public readonly host = "127.0.0.1") {}

  get pid(): number {
    return this.proc?.pid ?? 0;
  }
  get base(): string {
    return `http://${this.host}:${this.port}`;
  }

  async start(): Promise<void> {
    const args = [path.join(ROOT, "bin/memdiag"), "serve", "--host", this.host, "--port", String(this.port), "--db", this.db, ...this.extra];
    const env = { ...process.env, MEMDIAG_CONFIG: "/nonexistent/memdiag.config.json" } as NodeJS.ProcessEnv;
    // the token goes by environment, never on a command line (ps) or in a URL
    if (this.token) env.MEMDIAG_TOKEN = this.token;
    const p = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = p;
    p.stdout!.on("data", (d) => (this.log += d));
    p.stderr!.on("data", (d) => (this.log += d));
    // generous: on a machine with a load average of 20 a node start has taken > 20 s
    const deadline = Date.now() + 90000;
    while (Date.now() < deadline) {
      if (p.exitCode !== null) throw new Error(`memdiag serve exited ${p.exitCode}:\n${this.log}`);
      const ok = await fetch(`${this.base}/api/health`).then((r) => r.status < 500, () => false);
      if (ok) return;
      await sleep(50);
    }
    throw new Error(`memdiag serve did not come up:\n${this.log}`);
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const p = this.proc;
    if (!p || !this.running) return;
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    p.kill(signal);
    const t = setTimeout(() => p.kill("SIGKILL"), 10000);
    await exited;
    clearTimeout(t);
  }

  stop(): Promise<void> {
    return this.kill("SIGTERM");
  }
}

/** RSS of a process from /proc (bytes). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** the process exists and is not a zombie */
export function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** children of a process, from /proc (no fork: cheap enough to poll) */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(rest[1]) === ppid && rest[0] !== "Z") out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out.sort((a, b) => a - b);
}

/**
 * TCP proxy agent → control plane that reads the server's websocket frames (unmasked)
 * and records every ack per worker key (from the welcome on the same connection): the
 * test's own record of what the control plane acknowledged.
 */
export class AckProxy {
  private server?: net.Server;
  private sockets = new Set<net.Socket>();
  /** worker key → acked seqs */
  readonly acked = new Map<string, Set<number>>();
  /** worker key → number of welcomes (connections) */
  readonly welcomes = new Map<string, number>();
  port = 0;
  constructor(private readonly target: () => number) {}

  async start(port = 0): Promise<number> {
    this.server = net.createServer((client) => this.onClient(client));
    await new Promise<void>((r) => this.server!.listen(port, "127.0.0.1", () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  private onClient(client: net.Socket): void {
    const up = net.connect(this.target(), "127.0.0.1");
    this.sockets.add(client);
    this.sockets.add(up);
    let key: string | undefined;
    let buf = Buffer.alloc(0);
    let headersDone = false;
    const onFrame = (text: string) => {
      let m: any;
      try {
        m = JSON.parse(text);
      } catch {
        return;
      }
      if (m.type === "welcome") {
        key = m.worker_key;
        this.welcomes.set(key!, (this.welcomes.get(key!) ?? 0) + 1);
      } else if (m.type === "ack" && key) {
        if (!this.acked.has(key)) this.acked.set(key, new Set());
        this.acked.get(key)!.add(m.seq);
      }
    };
    up.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!headersDone) {
        const i = buf.indexOf("\r\n\r\n");
        if (i < 0) return;
        headersDone = true;
        buf = buf.subarray(i + 4);
      }
      for (;;) {
        if (buf.length < 2) break;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) break;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) break;
          len = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        if (buf.length < off + len) break;
        if (op === 1) onFrame(buf.subarray(off, off + len).toString("utf8"));
        buf = buf.subarray(off + len);
      }
    });
    // acks are recorded before the agent gets them: write after parsing
    up.on("data", (d) => client.write(d));
    client.on("data", (d) => up.write(d));
    const end = () => {
      client.destroy();
      up.destroy();
      this.sockets.delete(client);
      this.sockets.delete(up);
    };
    up.on("error", end);
    client.on("error", end);
    up.on("close", end);
    client.on("close", end);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

export interface LoadResult {
  requests: number;
  ok: number;
  errors: number;
  statuses: Record<string, number>;
  errorSamples: string[];
  /**
   * connections closed by the server before any response byte ("socket hang up",
   * ECONNRESET): a retiring worker after a reload closes its idle connections (keepalive
   * ones, and fresh ones whose request had not arrived yet) and the request crossed the
   * close on the wire. nginx does this without memdiag too; clients retry these. Counted
   * apart from errors; only drills that reload accept them (closeRaces option).
   */
  keepaliveRaces: number;
}

/**
 * Steady keepalive traffic from this process: `conns` loops issuing GET `paths` in turn,
 * until stop(); every non-2xx and every socket error counted.
 */
export class Load {
  private stopped = false;
  private loops: Promise<void>[] = [];
  private agent: http.Agent;
  readonly result: LoadResult = { requests: 0, ok: 0, errors: 0, statuses: {}, errorSamples: [], keepaliveRaces: 0 };
  constructor(private readonly port: number, private readonly paths: string[] = ["/ok"], private readonly conns = 4, private readonly pauseMs = 0, private readonly closeRaces = false) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: conns });
  }

  start(): this {
    for (let i = 0; i < this.conns; i++) this.loops.push(this.loop(i));
    return this;
  }

  private one(p: string): Promise<void> {
    return new Promise((resolve) => {
      const req = http.get({ host: "127.0.0.1", port: this.port, path: p, agent: this.agent, timeout: 10000 }, (res) => {
        res.resume();
        res.on("end", () => {
          this.result.requests++;
          const s = String(res.statusCode);
          this.result.statuses[s] = (this.result.statuses[s] ?? 0) + 1;
          if (res.statusCode! >= 200 && res.statusCode! < 300) this.result.ok++;
          else this.fail(`${p}: HTTP ${s}`);
          resolve();
        });
        res.on("error", (e) => {
          this.result.requests++;
          this.fail(`${p}: ${e.message}`);
          resolve();
        });
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", (e: Error & { code?: string }) => {
        this.result.requests++;
        if (this.closeRaces && (e.code === "ECONNRESET" || e.message === "socket hang up")) this.result.keepaliveRaces++;
        else this.fail(`${p}: ${e.message}`);
        resolve();
      });
    });
  }

  private fail(s: string): void {
    this.result.errors++;
    if (this.result.errorSamples.length < 10) this.result.errorSamples.push(s);
  }

  private async loop(i: number): Promise<void> {
    let k = i;
    while (!this.stopped) {
      await this.one(this.paths[k++ % this.paths.length]);
      if (this.pauseMs) await sleep(this.pauseMs);
    }
  }

  async stop(): Promise<LoadResult> {
    this.stopped = true;
    await Promise.all(this.loops);
    this.agent.destroy();
    return this.result;
  }
}

/** Poll until cond() or throw with `what` after timeoutMs. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
}

/** Seeded PRNG (mulberry32): the drills print their seed so a failure can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const SEED = envNum("MEMDIAG_DRILL_SEED", Date.now() % 1000000);

/**
 * nginx error-log lines at [error] or worse and crashes, minus what a lost control-plane
 * connection makes the cosocket layer log by itself (lua_socket_log_errors: "recv() failed
 * (104: Connection reset by peer), context: ngx.timer"): those are the expected reconnects.
 */
export function unexpectedErrors(lines: string[]): { unexpected: string[]; reconnects: number } {
  const re = /\[error\].* (recv|send|connect|writev)\(\) failed \((104|111|32): [^)]*\).*context: ngx\.timer/;
  const unexpected = lines.filter((l) => !re.test(l));
  return { unexpected, reconnects: lines.length - unexpected.length };
}

/**
 * A network namespace of the test's own joined to the host by a veth pair: processes run
 * inside it reach the host from a real non-loopback address (nsIp), the host side is
 * hostIp, the pair is a /30. Traffic stays between the two. Needs root.
 */
export class VethNamespace {
  readonly name: string;
  readonly hostIp: string;
  readonly nsIp: string;
  /** the /30 both ends are in */
  readonly subnet: string;
  private readonly veth: string;

  /** tag: a few letters naming the drill; octet: second octet of the 10.x.y.0/30 it uses */
  constructor(tag: string, octet: number) {
    const n = process.pid % 100000;
    const third = 100 + (process.pid % 150);
    this.name = `${tag}${n}`;
    this.veth = `${tag}v${n}`;
    this.hostIp = `10.${octet}.${third}.1`;
    this.nsIp = `10.${octet}.${third}.2`;
    this.subnet = `10.${octet}.${third}.0/30`;
  }

  up(): void {
    const sh = (args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
    sh(["netns", "add", this.name]);
    sh(["link", "add", `${this.veth}a`, "type", "veth", "peer", "name", `${this.veth}b`]);
    sh(["link", "set", `${this.veth}b`, "netns", this.name]);
    sh(["addr", "add", `${this.hostIp}/30`, "dev", `${this.veth}a`]);
    sh(["link", "set", `${this.veth}a`, "up"]);
    sh(["netns", "exec", this.name, "ip", "addr", "add", `${this.nsIp}/30`, "dev", `${this.veth}b`]);
    sh(["netns", "exec", this.name, "ip", "link", "set", `${this.veth}b`, "up"]);
    sh(["netns", "exec", this.name, "ip", "link", "set", "lo", "up"]);
  }

  down(): void {
    spawnSync("ip", ["link", "del", `${this.veth}a`]);
    spawnSync("ip", ["netns", "del", this.name]);
  }

  /** a command inside the namespace (env: added to this process's environment) */
  run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
    return spawnSync("ip", ["netns", "exec", this.name, cmd, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 120000 });
  }

  /** curl from inside the namespace: status, body and headers (lower-cased names) */
  curl(url: string, headers: string[] = [], maxTimeS = 10): { status: number; body: string; headers: Record<string, string> } {
    const args = ["-s", "-i", "-m", String(maxTimeS), "-o", "-", "-w", "\n%{http_code}"];
    for (const h of headers) args.push("-H", h);
    args.push(url);
    const out = this.run("curl", args).stdout ?? "";
    const i = out.lastIndexOf("\n");
    const msg = out.slice(0, i);
    const h = msg.indexOf("\r\n\r\n");
    const head: Record<string, string> = {};
    for (const line of (h < 0 ? "" : msg.slice(0, h)).split("\r\n").slice(1)) {
      const c = line.indexOf(":");
      if (c > 0) head[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    return { status: Number(out.slice(i + 1)), body: h < 0 ? msg : msg.slice(h + 4), headers: head };
  }
}
