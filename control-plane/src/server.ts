/**
 * The control plane process: one HTTP server carrying the REST API, /metrics,
 * the web console's static files, and two websocket endpoints routed on
 * upgrade (/ingest for agents, /live for consoles).
 */
import * as http from "http";
import * as fs from "fs";
import * as path from "path";
import type { Duplex } from "stream";
import express from "express";
import { Store } from "./store";
import { Writer, DEFAULT_WRITER, WriterOptions } from "./writer";
import { LiveHub } from "./live";
import { Ingest } from "./ingest";
import { apiRouter, apiErrors } from "./api";
import { renderMetrics } from "./metrics";
import { httpAuth, requestAllowed } from "./auth";
import { Logger, createLogger } from "./log";
import { suspectsFor } from "./analysis";
import { UnrootedInfo } from "./summary";
import { Checkpointer } from "./checkpoint";
import { browserScript } from "./format";
import { AGENT_VERSION } from "../../lua-src/memdiag/contract/version";
import { CONTROL_PLANE_DEFAULTS } from "../../lua-src/memdiag/contract/config";
import { splitListen } from "./config-file";

export interface ServerOptions {
  host: string;
  port: number;
  db: string;
  token: string;
  /** largest websocket frame accepted from an agent (bytes) */
  maxFrameBytes: number;
  /** consecutive bad frames before close 4400 */
  maxBadFrames: number;
  helloTimeoutMs: number;
  fullResolutionHours: number;
  retentionDays: number;
  pruneIntervalMs: number;
  /** how often suspects are recomputed for /live consoles (0: never) */
  suspectsIntervalMs: number;
  suspectsWindowS: number;
  /** directory with the web console (index.html); undefined: none */
  staticDir?: string;
  synchronous: "FULL" | "NORMAL";
  writer: WriterOptions;
  log?: Logger;
}

/** agents and control plane are released together */
export const VERSION = AGENT_VERSION;

export const DEFAULT_SERVER: Omit<ServerOptions, "db"> = {
  host: splitListen(CONTROL_PLANE_DEFAULTS.listen)!.host,
  port: splitListen(CONTROL_PLANE_DEFAULTS.listen)!.port,
  token: "",
  maxFrameBytes: 4 << 20,
  maxBadFrames: 5,
  helloTimeoutMs: 5000,
  fullResolutionHours: CONTROL_PLANE_DEFAULTS.full_resolution_hours,
  retentionDays: CONTROL_PLANE_DEFAULTS.retention_days,
  pruneIntervalMs: 5 * 60 * 1000,
  suspectsIntervalMs: 10000,
  suspectsWindowS: 600,
  synchronous: "NORMAL",
  writer: DEFAULT_WRITER,
};

export class ControlPlane {
  readonly store: Store;
  readonly writer: Writer;
  readonly live: LiveHub;
  readonly ingest: Ingest;
  readonly log: Logger;
  readonly http: http.Server;
  readonly app: express.Express;
  /** owners of unrooted groups seen lately (labels for /metrics) */
  private owners: Record<string, UnrootedInfo> = {};
  private timers: NodeJS.Timeout[] = [];
  private checkpointer: Checkpointer | undefined;
  private suspectsTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private suspectsAt = 0;
  private started = Date.now();
  port = 0;

  constructor(readonly opts: ServerOptions) {
    this.log = opts.log ?? createLogger();
    if (opts.token) this.log.redact(opts.token);
    this.store = new Store(opts.db, { synchronous: opts.synchronous });
    this.writer = new Writer(this.store, this.log, opts.writer);
    this.live = new LiveHub(this.log);
    this.ingest = new Ingest(this.store, this.writer, this.live, this.log, {
      token: opts.token, maxFrameBytes: opts.maxFrameBytes, maxBadFrames: opts.maxBadFrames, helloTimeoutMs: opts.helloTimeoutMs,
      heartbeatMs: 30000, commandTimeoutMs: 120000,
    });
    this.app = this.buildApp();
    this.http = http.createServer(this.app);
    this.http.on("upgrade", (req, socket, head) => this.onUpgrade(req, socket, head));
  }

  private buildApp(): express.Express {
    const app = express();
    app.disable("x-powered-by");
    app.set("query parser", "simple");
    app.use(httpAuth(this.opts.token));
    app.use("/api", express.json({ limit: "16kb" }));
    app.use("/api", apiRouter({ store: this.store, ingest: this.ingest, writer: this.writer, live: this.live, log: this.log, started: this.started, version: VERSION }));
    app.use("/api", apiErrors(this.log));
    app.get("/metrics", (req, res) => {
      if (Object.keys(req.query).length) {
        res.status(400).json({ error: `unknown parameter '${Object.keys(req.query)[0]}'; valid: (none)` });
        return;
      }
      const st = this.writer.status();
      this.refreshOwners();
      let live = 0, gone = 0;
      for (const w of this.store.workers()) w.state === "live" ? live++ : gone++;
      res.type("text/plain; version=0.0.4; charset=utf-8").send(renderMetrics(this.live.latest.values(), this.ownersFromLatest(), {
        workers_live: live, workers_gone: gone, frames: this.ingest.stats.frames, snapshots: this.ingest.stats.snapshots,
        rejected: this.ingest.stats.rejected, store_backlog: st.backlog, store_ok: st.ok, store_latency_p99_ms: st.store_latency_ms.p99,
      }));
    });
    const dir = this.opts.staticDir;
    if (dir && fs.existsSync(path.join(dir, "index.html"))) {
      // the web console formats with the terminal console's functions (format.ts), not copies
      const formatJs = browserScript();
      app.get("/format.js", (_req, res) => {
        res.type("application/javascript").send(formatJs);
      });
      app.use(express.static(dir, { index: "index.html", maxAge: 0 }));
      // the chart library (uPlot), served from node_modules
      try {
        const uplot = path.join(path.dirname(require.resolve("uplot/package.json")), "dist");
        app.use("/vendor/uplot", express.static(uplot, { maxAge: 0 }));
      } catch {
        this.log.warn("uplot is not installed (npm ci): the web console will have no charts");
      }
    } else {
      app.get("/", (_req, res) => {
        res.type("text/plain").send(`memdiag control plane ${VERSION}\nAPI: /api/workers /api/suspects /api/health  metrics: /metrics  live: ws /live\n(no web console directory configured)\n`);
      });
    }
    return app;
  }

  /** owner labels for unrooted groups: from the latest deep snapshots' unrooted info */
  private ownersFromLatest(): Record<string, { owner: string }> {
    return this.owners;
  }

  /** ingest tells us about owners through the store rows; refresh from the last deep snapshot of each live worker */
  private refreshOwners(): void {
    const owners: Record<string, UnrootedInfo> = {};
    for (const u of this.live.latest.values()) {
      const w = this.store.worker(u.worker.key);
      if (!w) continue;
      const d = this.store.atOrBefore(w.id, Number.MAX_VALUE, true);
      if (d) Object.assign(owners, d.unrooted);
    }
    this.owners = owners;
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? "/", "http://x");
    socket.on("error", () => socket.destroy());
    if (url.pathname === "/ingest") {
      // agents authenticate in hello (the token never travels in a URL or header)
      return this.ingest.handleUpgrade(req, socket, head);
    }
    if (url.pathname === "/live") {
      if (!requestAllowed(req, this.opts.token)) {
        socket.end("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        return;
      }
      return this.live.handleUpgrade(req, socket, head);
    }
    socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  }

  private prune(): void {
    if (this.writer.failing) return;
    try {
      const r = this.store.prune(Date.now() / 1000, this.opts.fullResolutionHours, this.opts.retentionDays);
      if (r.thinned || r.deleted) this.log.info(`store: retention: thinned ${r.thinned}, deleted ${r.deleted} snapshot(s)`);
    } catch (e) {
      this.log.error(`store: retention job failed: ${(e as Error).message}`);
    }
  }

  /**
   * How often the retention job runs: every pruneIntervalMs, and at least ten times per
   * retention period (never more than once a second), so what is kept beyond the
   * configured retention stays within a tenth of it: the store (and with it the cost of
   * every query) is bounded by the configuration, not by how long the control plane has run.
   */
  pruneEveryMs(): number {
    const shortest = Math.min(this.opts.fullResolutionHours * 3600, this.opts.retentionDays * 86400) * 1000;
    return Math.min(this.opts.pruneIntervalMs, Math.max(1000, shortest / 10));
  }

  /** recompute suspects for consoles; never more than ~5 % of the time (the next run waits 20× the last one's duration) */
  private tickSuspects(): void {
    let wait = this.opts.suspectsIntervalMs;
    try {
      this.refreshOwners();
      if (this.live.clients > 0) {
        const t = performance.now();
        this.live.setSuspects(suspectsFor(this.store, {}, this.opts.suspectsWindowS));
        this.suspectsAt = Date.now();
        wait = Math.max(wait, 20 * (performance.now() - t));
      }
    } catch (e) {
      this.log.error(`suspects: ${(e as Error).message}`);
    }
    if (this.stopped) return;
    this.suspectsTimer = setTimeout(() => this.tickSuspects(), wait);
    this.suspectsTimer.unref();
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(this.opts.port, this.opts.host, () => {
        this.http.off("error", reject);
        resolve();
      });
    });
    const addr = this.http.address();
    this.port = typeof addr === "object" && addr ? addr.port : this.opts.port;
    this.prune();
    // checkpoints in a thread; the main connection only checkpoints by itself when the WAL is large
    this.store.db.pragma("wal_autocheckpoint = 16384");
    this.checkpointer = new Checkpointer(this.opts.db, this.log);
    this.timers.push(setInterval(() => this.prune(), this.pruneEveryMs()));
    if (this.opts.suspectsIntervalMs > 0) {
      this.suspectsTimer = setTimeout(() => this.tickSuspects(), this.opts.suspectsIntervalMs);
      this.suspectsTimer.unref();
      // a console that connects after a quiet spell gets fresh suspects right away
      this.live.onConnect = () => {
        if (this.stopped || Date.now() - this.suspectsAt < this.opts.suspectsIntervalMs) return;
        this.suspectsAt = Date.now();
        clearTimeout(this.suspectsTimer);
        this.suspectsTimer = setTimeout(() => this.tickSuspects(), 0);
        this.suspectsTimer.unref();
      };
    }
    for (const t of this.timers) t.unref();
    this.log.info(`memdiag control plane ${VERSION} listening on http://${this.opts.host.includes(":") ? `[${this.opts.host}]` : this.opts.host}:${this.port} (db ${this.opts.db}, token ${this.opts.token ? "set" : "not set"})`);
    return this.port;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.suspectsTimer);
    this.ingest.close();
    this.live.close();
    this.writer.close();
    await this.checkpointer?.stop();
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
    this.store.close();
  }
}

export function serverOptions(o: Partial<ServerOptions> & { db: string }): ServerOptions {
  return { ...DEFAULT_SERVER, ...o, writer: { ...DEFAULT_WRITER, ...(o.writer ?? {}) } };
}
