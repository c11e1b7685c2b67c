/**
 * A real control plane (in-process, ephemeral port, SQLite file in a temp dir)
 * and a simulated agent that speaks the wire protocol over a real websocket.
 */
import { spawn, ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import WebSocket from "ws";
import { ControlPlane, ServerOptions, serverOptions } from "../../control-plane/src/server";
import { createLogger } from "../../control-plane/src/log";
import type { AgentIdentity } from "../../control-plane/src/protocol";

export interface RunningCP {
  cp: ControlPlane;
  base: string;
  ws: string;
  db: string;
  dir: string;
  logs: string[];
  stop(): Promise<void>;
}

export interface ServeProcess {
  p: ChildProcess;
  /** stdout and stderr so far */
  out: () => string;
  exited: Promise<number | null>;
}

/** `memdiag serve <args>` as its own process (bin/memdiag → dist/), resolved once it says it listens. */
export async function serveProcess(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ServeProcess> {
  const root = path.resolve(__dirname, "..", "..");
  if (!fs.existsSync(path.join(root, "dist", "control-plane", "src", "cli.js"))) throw new Error("build first: npm run build:ts");
  const p = spawn(process.execPath, [path.join(root, "bin", "memdiag"), "serve", ...args], { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  p.stdout!.on("data", (d) => (out += d));
  p.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((r) => p.on("exit", (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const t = setInterval(() => {
      if (out.includes("listening on")) {
        clearInterval(t);
        resolve();
      }
    }, 20);
    exited.then(() => {
      clearInterval(t);
      reject(new Error(`exited: ${out}`));
    });
  });
  return { p, out: () => out, exited };
}

export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-cp-"));
}

export async function startCP(o: Partial<ServerOptions> & { dir?: string } = {}): Promise<RunningCP> {
  const dir = o.dir ?? tempDir();
  const db = o.db ?? path.join(dir, "memdiag.db");
  const logs: string[] = [];
  const log = createLogger({ sink: (l) => logs.push(l), level: "debug" });
  const cp = new ControlPlane(serverOptions({ port: 0, host: "127.0.0.1", suspectsIntervalMs: 0, ...o, db, log }));
  const port = await cp.start();
  return { cp, base: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}`, db, dir, logs, stop: () => cp.stop() };
}

export async function getJson(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(url, { headers });
  const text = await r.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* plain text */
  }
  return { status: r.status, body };
}

/** an agent over a real websocket; messages are queued so tests can await them in order */
export class SimAgent {
  readonly ws: WebSocket;
  private queue: any[] = [];
  private waiters: ((m: any) => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly opened: Promise<void>;

  constructor(url: string, opts: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, opts);
    this.opened = new Promise((res, rej) => {
      this.ws.once("open", () => res());
      this.ws.once("error", rej);
    });
    this.closed = new Promise((res) => this.ws.on("close", (code, reason) => res({ code, reason: reason.toString() })));
    this.ws.on("error", () => undefined);
    this.ws.on("message", (d) => {
      const m = JSON.parse(d.toString());
      const w = this.waiters.shift();
      if (w) w(m);
      else this.queue.push(m);
    });
  }

  static async connect(base: string, opts?: WebSocket.ClientOptions): Promise<SimAgent> {
    const a = new SimAgent(`${base}/ingest`, opts);
    await a.opened;
    return a;
  }

  next(): Promise<any> {
    const m = this.queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    return new Promise((res) => this.waiters.push(res));
  }

  /** next message of a type, skipping others (e.g. commands while waiting for an ack) */
  async nextOf(type: string): Promise<any> {
    for (;;) {
      const m = await this.next();
      if (m.type === type) return m;
    }
  }

  send(m: unknown): void {
    this.ws.send(typeof m === "string" ? m : JSON.stringify(m));
  }

  async hello(agent: AgentIdentity, token = ""): Promise<any> {
    this.send({ type: "hello", protocol: 1, token, agent });
    return this.next();
  }

  /** send a snapshot and wait for its ack (or error) */
  async push(seq: number, snapshot: Record<string, unknown>): Promise<any> {
    this.send({ type: "snapshot", seq, snapshot });
    return this.next();
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}
