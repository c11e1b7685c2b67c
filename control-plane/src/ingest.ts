/**
 * Agent side of the wire (ws path /ingest, see protocol.ts and docs/protocol.md):
 * hello + token within 5 s → welcome; every snapshot parsed, schema-checked,
 * summarised and queued for commit; ack only after the commit; error replies for
 * bad frames and close 4400 after max_bad_frames in a row; commands to agents
 * and their results relayed to consoles.
 */
import { WebSocket, WebSocketServer, RawData } from "ws";
import type { IncomingMessage } from "http";
import type { Duplex } from "stream";
import * as zlib from "zlib";
import * as crypto from "crypto";
import { AgentIdentity, Close, CommandMsg, CommandName, PROTOCOL_VERSION, ServerToAgentMsg, WorkerInfo } from "./protocol";
import { validateSnapshot } from "../../schema/validate";
import { Store, WorkerRow } from "./store";
import { Writer } from "./writer";
import { LiveHub } from "./live";
import { Logger } from "./log";
import { summarize, Summary } from "./summary";
import { tokenEquals } from "./auth";

export interface IngestOptions {
  token: string;
  maxFrameBytes: number;
  maxBadFrames: number;
  helloTimeoutMs: number;
  /** ping agents this often; one missed pong closes the socket */
  heartbeatMs: number;
  commandTimeoutMs: number;
}

export interface CommandState {
  id: string;
  worker: string;
  command: CommandName;
  state: "sent" | "done" | "failed" | "timeout";
  sent: number;
  finished?: number;
  error?: string;
  /** the snapshot that answered it (reply_to) */
  snapshot_id?: number;
  /** sampler_status/arm/disarm: the agent's answer (sampler status); sampler_top results are not kept here */
  result?: Record<string, unknown>;
}

/** the result of a sampler command answered by command_result (not kept in CommandState) */
export interface CommandAnswer {
  state: CommandState;
  result?: Record<string, unknown>;
}

export interface IngestStats {
  connections: number;
  frames: number;
  snapshots: number;
  duplicates: number;
  rejected: Record<string, number>;
  closed: Record<string, number>;
  dropped_by_agents: number;
}

interface Conn {
  ws: WebSocket;
  remote: string;
  worker?: WorkerRow;
  bad: number;
  alive: boolean;
  helloTimer?: NodeJS.Timeout;
  /** replies of this event-loop turn are written in one go */
  corked: boolean;
}

const GZIP: zlib.ZlibOptions = { level: 3, memLevel: 6, windowBits: 13 };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);
const AGENT_TYPES = new Set(["hello", "snapshot", "command_result"]);

function checkIdentity(a: unknown): string | undefined {
  if (!isObj(a)) return "hello.agent must be an object";
  for (const f of ["host", "instance", "nginx_version", "agent_version"]) {
    if (typeof a[f] !== "string" || a[f] === "") return `hello.agent.${f} must be a non-empty string`;
  }
  if (!isInt(a.pid) || a.pid < 1) return "hello.agent.pid must be a positive integer";
  if (typeof a.worker_start !== "number" || !Number.isFinite(a.worker_start)) return "hello.agent.worker_start must be a number";
  if (!isInt(a.generation) || a.generation < 0) return "hello.agent.generation must be an integer >= 0";
  if (a.worker_id !== undefined && a.worker_id !== null && !isInt(a.worker_id)) return "hello.agent.worker_id must be an integer";
  return undefined;
}

export function workerInfo(w: WorkerRow): WorkerInfo {
  const info: WorkerInfo = {
    key: w.key, instance: w.instance, host: w.host, pid: w.pid, generation: w.generation, worker_start: w.worker_start,
    first_seen: w.first_seen, last_seen: w.last_seen, state: w.state, snapshots: w.snapshots,
  };
  if (w.last_snapshot_id !== undefined) info.last_snapshot_id = w.last_snapshot_id;
  if (w.rss_bytes !== undefined) info.rss_bytes = w.rss_bytes;
  return info;
}

export class Ingest {
  readonly wss: WebSocketServer;
  /** connected agents by worker key */
  readonly agents = new Map<string, Conn>();
  readonly commands = new Map<string, CommandState>();
  /** sampler commands: callers waiting for a command_result (request()) */
  private waiting = new Map<string, (a: CommandAnswer) => void>();
  readonly stats: IngestStats = { connections: 0, frames: 0, snapshots: 0, duplicates: 0, rejected: {}, closed: {}, dropped_by_agents: 0 };
  private heartbeat: NodeJS.Timeout;

  constructor(private store: Store, private writer: Writer, private live: LiveHub, private log: Logger, private opts: IngestOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxFrameBytes, perMessageDeflate: false });
    this.wss.on("connection", (ws, req: IncomingMessage) => this.onConnection(ws, req));
    this.heartbeat = setInterval(() => {
      for (const c of this.wss.clients) {
        const conn = (c as WebSocket & { conn?: Conn }).conn;
        if (!conn) continue;
        if (!conn.alive) {
          this.log.warn(`ingest: ${this.who(conn)}: no pong, closing`);
          c.terminate();
          continue;
        }
        conn.alive = false;
        c.ping();
      }
    }, opts.heartbeatMs);
    this.heartbeat.unref();
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit("connection", ws, req));
  }

  private who(c: Conn): string {
    return c.worker ? `worker ${c.worker.key}` : `agent ${c.remote}`;
  }

  private send(c: Conn, m: ServerToAgentMsg): void {
    if (c.ws.readyState !== WebSocket.OPEN) return;
    const sock = (c.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (sock && !c.corked) {
      // acks of one commit go out in one write
      c.corked = true;
      sock.cork();
      process.nextTick(() => {
        c.corked = false;
        sock.uncork();
      });
    }
    c.ws.send(JSON.stringify(m));
  }

  private closeConn(c: Conn, code: number, reason: string): void {
    this.stats.closed[String(code)] = (this.stats.closed[String(code)] ?? 0) + 1;
    this.log.warn(`ingest: ${this.who(c)}: closing ${code} (${reason})`);
    c.ws.close(code, reason.slice(0, 120));
  }

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    this.stats.connections++;
    const c: Conn = { ws, remote: `${req.socket.remoteAddress}:${req.socket.remotePort}`, bad: 0, alive: true, corked: false };
    (ws as WebSocket & { conn?: Conn }).conn = c;
    c.helloTimer = setTimeout(() => {
      if (!c.worker) this.closeConn(c, Close.HELLO_REQUIRED, `no hello within ${this.opts.helloTimeoutMs} ms`);
    }, this.opts.helloTimeoutMs);
    ws.on("pong", () => (c.alive = true));
    ws.on("message", (data, isBinary) => this.onFrame(c, data, isBinary));
    ws.on("error", (e: Error & { code?: string }) => {
      if (e.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
        this.stats.closed["1009"] = (this.stats.closed["1009"] ?? 0) + 1;
        this.log.warn(`ingest: ${this.who(c)}: frame above max_frame_bytes (${this.opts.maxFrameBytes}); closed 1009, nothing stored`);
      } else {
        this.log.warn(`ingest: ${this.who(c)}: socket error: ${e.message}`);
      }
    });
    ws.on("close", () => this.onClose(c));
  }

  private onClose(c: Conn): void {
    clearTimeout(c.helloTimer);
    const w = c.worker;
    if (!w || this.agents.get(w.key) !== c) return; // never identified, or replaced by a newer connection
    this.agents.delete(w.key);
    const now = Date.now() / 1000;
    try {
      this.store.markGone(w.id, now);
    } catch (e) {
      this.log.error(`store: cannot mark ${w.key} gone: ${(e as Error).message}`);
    }
    w.state = "gone";
    w.last_seen = Math.max(w.last_seen, now);
    this.log.info(`ingest: worker ${w.key} gone`);
    this.live.onGone(workerInfo(w));
  }

  /** a rejected frame: error reply, log line, and 4400 after too many in a row */
  private reject(c: Conn, reason: string, error: string, seq?: number): void {
    this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + 1;
    c.bad++;
    this.log.warn(`ingest: ${this.who(c)}: rejected frame${seq !== undefined ? ` seq ${seq}` : ""}: ${error}`);
    this.send(c, seq !== undefined ? { type: "error", seq, error } : { type: "error", error });
    if (c.bad >= this.opts.maxBadFrames) this.closeConn(c, Close.BAD_FRAMES, `${c.bad} bad frames in a row; last: ${error}`);
  }

  private onFrame(c: Conn, data: RawData, isBinary: boolean): void {
    this.stats.frames++;
    const received = performance.now();
    if (isBinary) return this.reject(c, "binary", "binary frames are not accepted; send JSON text frames");
    const raw = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    let msg: unknown;
    try {
      msg = JSON.parse(raw.toString());
    } catch (e) {
      if (!c.worker) return this.closeConn(c, Close.HELLO_REQUIRED, "first frame must be a hello (got invalid JSON)");
      return this.reject(c, "json", `malformed JSON: ${(e as Error).message}`);
    }
    if (!isObj(msg) || typeof msg.type !== "string") {
      if (!c.worker) return this.closeConn(c, Close.HELLO_REQUIRED, "first frame must be a hello");
      return this.reject(c, "envelope", "a frame must be a JSON object with a string 'type'");
    }
    if (!AGENT_TYPES.has(msg.type)) return this.closeConn(c, Close.UNKNOWN_TYPE, `unknown message type '${msg.type.slice(0, 40)}'`);
    if (!c.worker) {
      if (msg.type !== "hello") return this.closeConn(c, Close.HELLO_REQUIRED, `first frame must be a hello (got '${msg.type}')`);
      return this.onHello(c, msg);
    }
    if (msg.type === "hello") return this.reject(c, "hello", "hello already received on this connection");
    if (msg.type === "command_result") return this.onCommandResult(c, msg);
    return this.onSnapshot(c, msg, received, raw);
  }

  private onHello(c: Conn, m: Obj): void {
    if (this.opts.token && !tokenEquals(m.token, this.opts.token)) return this.closeConn(c, Close.UNAUTHORIZED, "unauthorized: missing or wrong token");
    if (m.protocol !== PROTOCOL_VERSION) return this.closeConn(c, Close.BAD_FRAMES, `unsupported protocol ${JSON.stringify(m.protocol)}; this control plane speaks ${PROTOCOL_VERSION}`);
    const bad = checkIdentity(m.agent);
    if (bad) return this.closeConn(c, Close.BAD_FRAMES, bad);
    const a = m.agent as unknown as AgentIdentity;
    let w: WorkerRow;
    try {
      w = this.store.helloWorker(a, Date.now() / 1000);
    } catch (e) {
      this.log.error(`store: cannot register worker ${a.instance}/${a.pid}: ${(e as Error).message}`);
      return this.closeConn(c, 1011, "storage unavailable; retry later");
    }
    clearTimeout(c.helloTimer);
    const old = this.agents.get(w.key);
    if (old && old !== c) this.closeConn(old, 1000, "replaced by a newer connection of the same worker");
    c.worker = w;
    this.agents.set(w.key, c);
    this.log.info(`ingest: worker ${w.key} connected from ${c.remote}${w.previous_key ? ` (replaces ${w.previous_key})` : ""}`);
    this.send(c, { type: "welcome", worker_key: w.key, max_frame_bytes: this.opts.maxFrameBytes });
  }

  private onCommandResult(c: Conn, m: Obj): void {
    if (typeof m.id !== "string" || typeof m.ok !== "boolean") return this.reject(c, "command_result", "command_result needs a string 'id' and a boolean 'ok'");
    c.bad = 0;
    const cmd = this.commands.get(m.id);
    const error = typeof m.error === "string" ? m.error : undefined;
    if (cmd && cmd.worker === c.worker!.key) {
      cmd.state = m.ok ? "done" : "failed";
      cmd.finished = Date.now() / 1000;
      if (error) cmd.error = error;
      if (cmd.command !== "sampler_top" && isObj(m.result)) cmd.result = m.result;
      const w = this.waiting.get(m.id);
      if (w) {
        this.waiting.delete(m.id);
        w({ state: cmd, result: isObj(m.result) ? m.result : undefined });
      }
    }
    this.live.onCommandResult({ type: "command_result", id: m.id, worker: c.worker!.key, command: cmd?.command ?? "collect", ok: m.ok, error });
  }

  private onSnapshot(c: Conn, m: Obj, received: number, raw: Buffer): void {
    const w = c.worker!;
    const seq = isInt(m.seq) && m.seq >= 0 ? m.seq : undefined;
    if (seq === undefined) return this.reject(c, "envelope", "snapshot frame needs an integer 'seq' >= 0");
    if (!isObj(m.snapshot)) return this.reject(c, "envelope", "snapshot frame needs an object 'snapshot'", seq);
    const s = m.snapshot;
    const v = validateSnapshot(s);
    if (!v.ok) return this.reject(c, "schema", `schema: ${v.error}`, seq);
    if (s.pid !== w.pid) return this.reject(c, "identity", `snapshot pid ${s.pid} is not the pid of this connection's hello (${w.pid})`, seq);
    if (typeof s.instance === "string" && s.instance !== w.instance) return this.reject(c, "identity", `snapshot instance does not match hello`, seq);
    c.bad = 0;
    if (isInt(m.dropped) && m.dropped > 0) {
      this.stats.dropped_by_agents += m.dropped;
      this.log.warn(`ingest: worker ${w.key} dropped ${m.dropped} snapshot(s) while the control plane was away`);
    }
    const sum = summarize(s);
    const time = s.time as number;
    const rss = (s.system as Obj).rss_bytes as number;
    const replyTo = typeof m.reply_to === "string" ? m.reply_to : undefined;
    // the frame as the agent sent it, compressed (small zlib state: cheap per call)
    const full = zlib.gzipSync(raw, GZIP);
    this.store_(c, w, { seq, time, rss, sum, replyTo, full, received, rawBytes: raw.length });
  }

  private store_(c: Conn, w: WorkerRow, x: { seq: number; time: number; rss: number; sum: Summary; replyTo?: string; full: Buffer; received: number; rawBytes: number }): void {
    const { seq, sum } = x;
    const id = this.store.allocateId();
    let early = false;
    const update = () => {
      w.snapshots++;
      w.last_snapshot_id = Math.max(w.last_snapshot_id ?? 0, id);
      w.rss_bytes = x.rss;
      w.last_seen = Math.max(w.last_seen, Date.now() / 1000);
      if (this.agents.get(w.key) === c || w.state === "live") {
        this.live.onSnapshot({ type: "snapshot", worker: workerInfo(w), snapshot_id: id, summary: { time: x.time, seq: seq, metrics: sum.metrics } });
      }
    };
    const ok = this.writer.enqueue({
      snap: { id, worker: w.id, seq, time: x.time, received: Date.now(), deep: sum.deep, rss_bytes: x.rss, metrics: sum.metrics, unrooted: sum.unrooted, full: x.full },
      bytes: x.full.length + x.rawBytes / 4 + 2048,
      receivedAt: x.received,
      done: (fresh) => {
        if (fresh) {
          this.stats.snapshots++;
          if (!early) update();
          const cmd = x.replyTo ? this.commands.get(x.replyTo) : undefined;
          if (cmd) cmd.snapshot_id = id;
        } else this.stats.duplicates++;
        this.send(c, { type: "ack", seq });
      },
      backlogged: () => {
        // storage failing: consoles still see the data live (the ack waits for the commit)
        if (!early) {
          early = true;
          update();
        }
      },
    });
    if (!ok) {
      this.stats.rejected.backlog_full = (this.stats.rejected.backlog_full ?? 0) + 1;
      this.send(c, { type: "error", seq, error: "storage unavailable and backlog full; not stored, resend later" });
      return;
    }
    if (this.writer.failing) {
      early = true;
      update();
    }
  }

  /** ask a connected worker for a fresh ("collect") or deep snapshot */
  sendCommand(key: string, command: CommandName, args?: Record<string, number | boolean>): CommandState | undefined {
    const c = this.agents.get(key);
    if (!c) return undefined;
    const id = crypto.randomUUID();
    const st: CommandState = { id, worker: key, command, state: "sent", sent: Date.now() / 1000 };
    this.commands.set(id, st);
    if (this.commands.size > 1000) this.commands.delete(this.commands.keys().next().value!);
    const msg: CommandMsg = { type: "command", id, command };
    if (args) msg.args = args;
    this.send(c, msg);
    setTimeout(() => {
      if (st.state === "sent") st.state = "timeout";
    }, this.opts.commandTimeoutMs).unref();
    return st;
  }

  /**
   * Sends a command and waits for its command_result (with `result`);
   * undefined when the worker is not connected. Resolves with state "timeout" after timeoutMs
   * or when the agent disconnects first.
   */
  request(key: string, command: CommandName, args: Record<string, number | boolean> | undefined, timeoutMs: number): Promise<CommandAnswer> | undefined {
    const c = this.agents.get(key);
    const st = this.sendCommand(key, command, args);
    if (!st || !c) return undefined;
    return new Promise((resolve) => {
      const done = (a: CommandAnswer) => {
        clearTimeout(timer);
        c.ws.off("close", onClose);
        resolve(a);
      };
      const timer = setTimeout(() => {
        this.waiting.delete(st.id);
        if (st.state === "sent") st.state = "timeout";
        done({ state: st });
      }, timeoutMs);
      const onClose = () => {
        if (!this.waiting.delete(st.id)) return;
        if (st.state === "sent") {
          st.state = "failed";
          st.error = "worker disconnected";
        }
        done({ state: st });
      };
      c.ws.on("close", onClose);
      this.waiting.set(st.id, done);
    });
  }

  close(): void {
    clearInterval(this.heartbeat);
    for (const c of this.wss.clients) c.close(1001, "control plane shutting down");
    this.wss.close();
  }
}
