/**
 * The console feed (ws path /live): every stored snapshot's summary, workers
 * going away, and the current suspects. A console that connects first gets the
 * latest state of every live worker and the suspects. Slow consoles are skipped
 * (bounded send buffer) rather than buffered without limit.
 */
import { WebSocket, WebSocketServer } from "ws";
import type { IncomingMessage } from "http";
import type { Duplex } from "stream";
import { LiveCommandResult, LiveMsg, LiveWorkerUpdate, Suspect, WorkerInfo } from "./protocol";
import { Logger } from "./log";

/** a console whose send buffer is above this misses updates until it catches up */
const MAX_BUFFERED = 8 << 20;

export class LiveHub {
  readonly wss: WebSocketServer;
  /** latest update per live worker key (also what /metrics reads) */
  readonly latest = new Map<string, LiveWorkerUpdate>();
  private suspects: Suspect[] = [];
  private suspectsJson = "[]";
  dropped = 0;
  /** called when a console connects (the server refreshes stale suspects for it) */
  onConnect: (() => void) | undefined;

  constructor(private log: Logger) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: 64 << 10,
      // accept the bearer.<token> subprotocol browsers use to authenticate
      handleProtocols: (protocols) => {
        for (const p of protocols) if (p.startsWith("bearer.")) return p;
        return false;
      },
    });
    this.wss.on("connection", (ws) => this.onConnection(ws));
  }

  get clients(): number {
    return this.wss.clients.size;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit("connection", ws, req));
  }

  private onConnection(ws: WebSocket): void {
    ws.on("error", (e) => this.log.warn(`live: console socket error: ${e.message}`));
    // consoles only listen; anything they send is ignored
    for (const u of this.latest.values()) ws.send(JSON.stringify(u));
    ws.send(JSON.stringify({ type: "suspects", suspects: this.suspects }));
    this.onConnect?.();
  }

  private broadcast(msg: LiveMsg): void {
    if (this.wss.clients.size === 0) return;
    const data = JSON.stringify(msg);
    for (const c of this.wss.clients) {
      if (c.readyState !== WebSocket.OPEN) continue;
      if (c.bufferedAmount > MAX_BUFFERED) {
        this.dropped++;
        continue;
      }
      c.send(data);
    }
  }

  onSnapshot(u: LiveWorkerUpdate): void {
    this.latest.set(u.worker.key, u);
    this.broadcast(u);
  }

  onGone(worker: WorkerInfo): void {
    this.latest.delete(worker.key);
    this.broadcast({ type: "worker_gone", worker });
  }

  /** relay an agent's answer to a command (e.g. the console's "scan now") */
  onCommandResult(msg: LiveCommandResult): void {
    this.broadcast(msg);
  }

  setSuspects(s: Suspect[]): void {
    const j = JSON.stringify(s);
    this.suspects = s;
    if (j === this.suspectsJson) return;
    this.suspectsJson = j;
    this.broadcast({ type: "suspects", suspects: s });
  }

  currentSuspects(): Suspect[] {
    return this.suspects;
  }

  close(): void {
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
  }
}
