/**
 * A small control-plane stand-in for agent push tests: speaks the wire protocol
 * (control-plane/src/protocol.ts) on ws path /ingest with the `ws` package.
 * Accepts hello (checks the token), validates and "stores" snapshots (in
 * memory), acks them, can send commands, and can be stopped and started again
 * on the same port. Independent of the real control plane on purpose.
 */
import * as http from "http";
import { WebSocketServer, WebSocket, RawData } from "ws";
import { Close, PROTOCOL_VERSION, HelloMsg, SnapshotMsg, CommandResultMsg } from "../../control-plane/src/protocol";
import { validateSnapshot } from "../../schema/validate";
import { Nginx } from "./nginx";
import { freePort } from "./ports";
import { AgentOptions } from "../../control-plane/src/config-file";

export interface PeerOptions {
  token: string;
  /** max_frame_bytes announced in welcome and enforced (ws maxPayload → close 1009) */
  maxFrameBytes?: number;
  /** do not ack (snapshots are recorded but stay in the agent's queue) */
  noAck?: boolean;
  /** reject a snapshot with an error frame (nothing "stored") when this returns a reason */
  reject?: (msg: SnapshotMsg, pid: number) => string | undefined;
}

export interface Received {
  /** hello.agent.pid of the sender */
  pid: number;
  conn: number;
  msg: SnapshotMsg;
  bytes: number;
  valid: boolean;
  error?: string;
}

export interface PeerConn {
  id: number;
  ws: WebSocket;
  hello?: HelloMsg;
  closed: boolean;
  closeCode?: number;
  /** who closed it: "agent" when the close came from the agent side */
  closedBy?: "agent" | "peer";
  /** the code the peer closed with (closeCode is what the agent answered or sent) */
  peerCode?: number;
  /** pings received from the agent (keepalive) */
  pings: number;
}

export class WsPeer {
  port = 0;
  received: Received[] = [];
  hellos: HelloMsg[] = [];
  rejected: { token: string; pid?: number; at: number }[] = [];
  results: CommandResultMsg[] = [];
  conns: PeerConn[] = [];
  tooLarge = 0;
  private server?: http.Server;
  private wss?: WebSocketServer;
  private nextConn = 1;
  private nextCmd = 1;

  constructor(public opts: PeerOptions) {}

  get url(): string {
    return `ws://127.0.0.1:${this.port}/ingest`;
  }

  async start(port = this.port): Promise<void> {
    this.server = http.createServer((_req, res) => {
      res.statusCode = 404;
      res.end();
    });
    this.wss = new WebSocketServer({ server: this.server, path: "/ingest", maxPayload: this.opts.maxFrameBytes ?? 16 * 1024 * 1024 });
    this.wss.on("connection", (ws) => this.accept(ws));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(port, "127.0.0.1", () => resolve());
    });
    this.port = (this.server.address() as any).port;
  }

  /** Stops accepting and cuts every connection (no close handshake: like a killed process). */
  async stop(): Promise<void> {
    for (const c of this.conns) {
      if (c.closed) continue;
      c.closedBy = "peer";
      c.ws.terminate();
    }
    await new Promise<void>((r) => (this.wss ? this.wss.close(() => r()) : r()));
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections?.();
    this.wss = undefined;
    this.server = undefined;
  }

  /** Live (hello'd, not closed) connections. */
  live(): PeerConn[] {
    return this.conns.filter((c) => !c.closed && c.hello);
  }

  /** Distinct snapshots (by pid and seq) in arrival order. */
  unique(pid?: number): Received[] {
    const seen = new Set<string>();
    const out: Received[] = [];
    for (const r of this.received) {
      if (pid !== undefined && r.pid !== pid) continue;
      const k = `${r.pid}:${r.msg.seq}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(r);
    }
    return out;
  }

  /** Sends a command to the live connection of `pid`; returns its id. */
  command(pid: number, command: "collect" | "deep" | string): string {
    const c = this.live().find((x) => x.hello!.agent.pid === pid);
    if (!c) throw new Error(`no live connection from pid ${pid}`);
    const id = `cmd-${this.nextCmd++}`;
    c.ws.send(JSON.stringify({ type: "command", id, command }));
    return id;
  }

  async waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 20000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const v = fn();
      if (v) return v;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`ws-peer: timed out waiting for ${what}`);
  }

  private accept(ws: WebSocket): void {
    const c: PeerConn = { id: this.nextConn++, ws, closed: false, pings: 0 };
    ws.on("ping", () => c.pings++);
    this.conns.push(c);
    const helloTimer = setTimeout(() => {
      if (!c.hello) ws.close(Close.HELLO_REQUIRED, "hello required");
    }, 5000);
    ws.on("close", (code) => {
      clearTimeout(helloTimer);
      if (!c.closed) {
        c.closed = true;
        c.closeCode = code;
        c.closedBy = c.closedBy ?? "agent";
      }
    });
    ws.on("error", () => {
      /* 1009 and resets show up as close */
    });
    ws.on("message", (data: RawData, isBinary: boolean) => this.onMessage(c, data, isBinary));
    // ws closes with 1009 itself when a message exceeds maxPayload
    ws.on("close", (code) => {
      if (code === Close.TOO_LARGE) this.tooLarge++;
    });
  }

  private closeWith(c: PeerConn, code: number, reason: string): void {
    c.closedBy = "peer";
    c.peerCode = code;
    c.ws.close(code, reason);
  }

  private onMessage(c: PeerConn, data: RawData, isBinary: boolean): void {
    const text = data.toString();
    let msg: any;
    try {
      msg = JSON.parse(text);
    } catch {
      c.ws.send(JSON.stringify({ type: "error", error: "not JSON" }));
      return;
    }
    if (!c.hello) {
      if (msg.type !== "hello") return this.closeWith(c, Close.HELLO_REQUIRED, "hello required");
      if (msg.token !== this.opts.token) {
        this.rejected.push({ token: msg.token, pid: msg.agent?.pid, at: Date.now() });
        c.ws.send(JSON.stringify({ type: "error", error: "unauthorized: wrong token" }));
        return this.closeWith(c, Close.UNAUTHORIZED, "unauthorized");
      }
      if (msg.protocol !== PROTOCOL_VERSION) return this.closeWith(c, Close.BAD_FRAMES, "protocol");
      c.hello = msg;
      this.hellos.push(msg);
      const a = msg.agent;
      c.ws.send(JSON.stringify({ type: "welcome", worker_key: `${a.instance}/${a.pid}/${a.worker_start}`, max_frame_bytes: this.opts.maxFrameBytes ?? 16 * 1024 * 1024 }));
      return;
    }
    if (isBinary) return this.closeWith(c, Close.UNKNOWN_TYPE, "binary");
    if (msg.type === "snapshot") {
      const v = validateSnapshot(msg.snapshot);
      this.received.push({ pid: c.hello.agent.pid, conn: c.id, msg, bytes: Buffer.byteLength(text), valid: v.ok, error: v.error });
      if (!v.ok) {
        c.ws.send(JSON.stringify({ type: "error", seq: msg.seq, error: `schema: ${v.error}` }));
        return;
      }
      const why = this.opts.reject?.(msg, c.hello.agent.pid);
      if (why !== undefined) {
        this.received[this.received.length - 1].error = why;
        c.ws.send(JSON.stringify({ type: "error", seq: msg.seq, error: why }));
        return;
      }
      if (!this.opts.noAck) c.ws.send(JSON.stringify({ type: "ack", seq: msg.seq }));
    } else if (msg.type === "command_result") {
      this.results.push(msg);
    } else {
      this.closeWith(c, Close.UNKNOWN_TYPE, `unknown type ${msg.type}`);
    }
  }
}

/**
 * Registers jest hooks that start `peer` on a free port and then a real nginx whose
 * agent pushes to it (agent options over control_plane_url, token "t", interval 1 s),
 * and stop both afterwards. `set` receives the nginx before it starts.
 */
export function pushingNginx(peer: WsPeer, set: (n: Nginx) => void, opts: { workers?: number; agent?: AgentOptions } = {}): void {
  let n: Nginx | undefined;
  beforeAll(async () => {
    await peer.start(await freePort());
    n = new Nginx({ workers: opts.workers ?? 2, agent: { control_plane_url: peer.url, token: "t", interval_s: 1, ...opts.agent } });
    set(n);
    await n.start();
  });
  afterAll(async () => {
    await n?.stop();
    await peer.stop();
  });
}
