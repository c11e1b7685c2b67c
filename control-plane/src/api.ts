/**
 * REST JSON API (docs/protocol.md). Every handler validates its query
 * parameters (unknown → 400 listing the valid ones) and answers JSON.
 */
import express, { Request, Response, NextFunction, Router } from "express";
import { Store } from "./store";
import { Ingest, workerInfo } from "./ingest";
import { Writer } from "./writer";
import { LiveHub } from "./live";
import { HttpError, query, parseDuration, parseTime, parseId, parseLimit } from "./params";
import { diffSnapshots, diffTimes, instanceSeries, suspectsFor } from "./analysis";
import { Logger } from "./log";
import { CallpathStore, diffCallpaths, diffFolded, foldedOf, symbolizePaths } from "./callpaths";
import { Symbolizer } from "./elfsym";
import type { Callpaths } from "./protocol";
import { reportInputFromStore } from "./report/source";
import { buildReport } from "./report/build";
import { REPORT_CONTENT_TYPE, REPORT_FORMATS, ReportFormat, renderReport } from "./report/render";

/** the report's window when neither window nor from is given */
export const DEFAULT_REPORT_WINDOW_S = 3600;

export interface ApiDeps {
  store: Store;
  ingest: Ingest;
  writer: Writer;
  live: LiveHub;
  log: Logger;
  started: number;
  version: string;
}

type Handler = (req: Request, res: Response) => unknown;
const h = (fn: Handler) => (req: Request, res: Response, next: NextFunction): void => {
  try {
    const out = fn(req, res);
    if (out !== undefined && !res.headersSent) res.json(out);
  } catch (e) {
    next(e);
  }
};

export function apiRouter(d: ApiDeps): Router {
  const r = express.Router();
  const { store } = d;

  r.get("/health", h((req) => {
    query(req, []);
    const st = d.writer.status();
    return {
      ok: st.ok,
      version: d.version,
      uptime_s: Math.round((Date.now() - d.started) / 1000),
      store: { file: store.file, ...st },
      ingest: { agents: d.ingest.agents.size, ...d.ingest.stats },
      live: { consoles: d.live.clients, dropped: d.live.dropped },
    };
  }));

  r.get("/workers", h((req) => {
    const q = query(req, ["instance", "state"]);
    if (q.state !== undefined && q.state !== "live" && q.state !== "gone") throw new HttpError(400, "state: expected 'live' or 'gone'");
    return store.workers({ instance: q.instance, state: q.state }).map((w) => ({
      ...workerInfo(w), worker_id: w.worker_id, nginx_version: w.nginx_version, agent_version: w.agent_version, previous_key: w.previous_key,
    }));
  }));

  r.get("/instances", h((req) => {
    query(req, []);
    const by = new Map<string, { instance: string; host: string; workers: string[]; live: number; first_seen: number; last_seen: number }>();
    for (const w of store.workers()) {
      let i = by.get(w.instance);
      if (!i) by.set(w.instance, (i = { instance: w.instance, host: w.host, workers: [], live: 0, first_seen: w.first_seen, last_seen: w.last_seen }));
      i.workers.push(w.key);
      if (w.state === "live") i.live++;
      i.first_seen = Math.min(i.first_seen, w.first_seen);
      i.last_seen = Math.max(i.last_seen, w.last_seen);
    }
    return [...by.values()];
  }));

  const workerOr404 = (key: string) => {
    const w = store.worker(key);
    if (!w) throw new HttpError(404, `worker '${key}' not found`);
    return w;
  };

  r.get("/workers/:key", h((req) => {
    query(req, []);
    const w = workerOr404(String(req.params.key));
    return { ...workerInfo(w), worker_id: w.worker_id, nginx_version: w.nginx_version, agent_version: w.agent_version, previous_key: w.previous_key };
  }));

  r.get("/workers/:key/snapshots", h((req) => {
    const q = query(req, ["from", "to", "limit"]);
    const w = workerOr404(String(req.params.key));
    const from = q.from !== undefined ? parseTime(q.from, "from") : 0;
    const to = q.to !== undefined ? parseTime(q.to, "to") : Number.MAX_VALUE;
    return store.listSnapshots(w.id, from, to, parseLimit(q.limit, 1000, 100000)).map(({ worker: _w, ...s }) => s);
  }));

  r.post("/workers/:key/command", h((req, res) => {
    query(req, []);
    const key = String(req.params.key);
    const body = req.body as { command?: unknown; args?: unknown } | undefined;
    const cmd = body?.command;
    // [sampler commands] sampler_status / sampler_arm {args: {rate?, depth?, aligned?}} / sampler_disarm; the answer is in GET /api/commands/:id (result)
    const sampler = cmd === "sampler_status" || cmd === "sampler_arm" || cmd === "sampler_disarm";
    if (cmd !== "collect" && cmd !== "deep" && !sampler) {
      throw new HttpError(400, "body: expected {\"command\": \"collect\" | \"deep\" | \"sampler_status\" | \"sampler_arm\" | \"sampler_disarm\"} (call paths: GET /api/workers/:key/callpaths)");
    }
    const args = sampler ? commandArgs(body?.args) : undefined;
    workerOr404(key);
    const st = d.ingest.sendCommand(key, cmd, args);
    if (!st) throw new HttpError(409, `worker '${key}' is not connected`);
    res.status(202);
    return st;
  }));

  // ---- [sampler] allocation call paths (issue 5): live from the agent, symbolised, stored per fetch ----
  let cpStore: CallpathStore | undefined;
  const callpaths = () => (cpStore ??= new CallpathStore(store.db));
  let sym = new Symbolizer();
  let symAt = Date.now();
  const symbolizer = () => {
    // re-read ELF files now and then (a rebuilt module has a new build-id: the old cache would not match it)
    if (Date.now() - symAt > 60000) {
      sym = new Symbolizer();
      symAt = Date.now();
    }
    return sym;
  };
  const async_ = (fn: (req: Request, res: Response) => Promise<unknown>) => (req: Request, res: Response, next: NextFunction): void => {
    fn(req, res).then((out) => {
      if (out !== undefined && !res.headersSent) res.json(out);
    }, next);
  };
  const sendFolded = (res: Response, text: string) => res.type("text/plain; charset=utf-8").send(text);
  const format = (v: string | undefined) => {
    if (v !== undefined && v !== "json" && v !== "folded") throw new HttpError(400, `format: expected 'json' or 'folded' (got '${v}')`);
    return v ?? "json";
  };

  /** asks a connected worker for its sampled call paths (sampler_top), names the frames, stores the fetch */
  const fetchCallpaths = async (key: string, args: Record<string, number>, lines: boolean, timeoutMs = 30000): Promise<Callpaths> => {
    const p = d.ingest.request(key, "sampler_top", args, timeoutMs);
    if (!p) throw new HttpError(409, `worker '${key}' is not connected`);
    const a = await p;
    if (a.state.state === "timeout") throw new HttpError(504, `worker '${key}' did not answer sampler_top within ${timeoutMs / 1000} s`);
    if (a.state.state !== "done" || !a.result) {
      const err = a.state.error ?? "no result";
      // "never armed": the user has to arm first (POST .../command {"command":"sampler_arm"} or /_memdiag?sampler=arm)
      throw new HttpError(409, `sampler_top: ${err}`);
    }
    const r = a.result;
    const sy = symbolizer();
    const paths = symbolizePaths(r, sy);
    if (lines) {
      // file:line from DWARF line tables (addr2line, one run per file) where the chosen ELF file has them
      const frames = paths.flatMap((p) => p.frames);
      sy.fileLines(frames).forEach((l, i) => {
        if (l) frames[i].line = l;
      });
    }
    return callpaths().add({
      worker: key,
      time: Date.now() / 1000,
      pid: Number(r.pid) || 0,
      paths_total: Number(r.paths_total) || 0,
      est_bytes_total: Number(r.est_bytes_total) || 0,
      ...(typeof r.truncated_paths === "number" ? { truncated_paths: r.truncated_paths } : {}),
      sampler: (r.sampler as Record<string, unknown>) ?? {},
      paths,
    });
  };

  r.get("/workers/:key/callpaths", async_(async (req, res) => {
    const q = query(req, ["format", "limit", "window", "min_age", "lines"]);
    if (q.lines !== undefined && q.lines !== "0" && q.lines !== "1") throw new HttpError(400, `lines: expected 0 or 1 (got '${q.lines}')`);
    const fmt = format(q.format);
    const key = String(req.params.key);
    workerOr404(key);
    const args: Record<string, number> = { limit: q.limit !== undefined ? Math.min(parseLimit(q.limit, 200, 1000), 1000) : 200 };
    if (q.window !== undefined) args.window_s = parseDuration(q.window, "window");
    if (q.min_age !== undefined) args.min_age_s = parseDuration(q.min_age, "min_age");
    const stored = await fetchCallpaths(key, args, q.lines === "1");
    res.setHeader("X-Memdiag-Callpaths-Id", String(stored.id));
    if (fmt === "folded") return void sendFolded(res, foldedOf(stored.paths));
    return stored;
  }));

  r.get("/workers/:key/callpaths/history", h((req) => {
    query(req, []);
    const key = String(req.params.key);
    workerOr404(key);
    return callpaths().list(key);
  }));

  r.get("/workers/:key/callpaths/diff", h((req, res) => {
    const q = query(req, ["a", "b", "format"]);
    const fmt = format(q.format);
    const key = String(req.params.key);
    workerOr404(key);
    if (q.a === undefined || q.b === undefined) throw new HttpError(400, "a and b (call path fetch ids, from GET .../callpaths or .../callpaths/history) are required");
    const get = (v: string, n: string) => {
      const c = callpaths().get(parseId(v, n));
      if (!c || c.worker !== key) throw new HttpError(404, `${n}: call path fetch ${v} of worker '${key}' not found`);
      return c;
    };
    const diff = diffCallpaths(get(q.a, "a"), get(q.b, "b"));
    if (fmt === "folded") return void sendFolded(res, diffFolded(diff));
    return diff;
  }));

  r.get("/callpaths/:id", h((req, res) => {
    const q = query(req, ["format"]);
    const fmt = format(q.format);
    const c = callpaths().get(parseId(String(req.params.id), "id"));
    if (!c) throw new HttpError(404, `call path fetch ${req.params.id} not found`);
    if (fmt === "folded") return void sendFolded(res, foldedOf(c.paths));
    return c;
  }));

  r.get("/commands/:id", h((req) => {
    query(req, []);
    const st = d.ingest.commands.get(String(req.params.id));
    if (!st) throw new HttpError(404, `command '${req.params.id}' not found`);
    return st;
  }));

  r.get("/snapshots/:id", h((req) => {
    query(req, []);
    const id = parseId(String(req.params.id), "id");
    const s = store.snapshot(id);
    if (s) return { id: s.id, worker: store.workerById(s.worker)?.key, seq: s.seq, time: s.time, deep: s.deep, stored: true, snapshot: s.snapshot };
    const p = d.writer.pending(id);
    if (p) {
      const zlib = require("zlib") as typeof import("zlib");
      return { id, worker: store.workerById(p.worker)?.key, seq: p.seq, time: p.time, deep: p.deep, stored: false, snapshot: JSON.parse(zlib.gunzipSync(p.full).toString("utf8")).snapshot };
    }
    throw new HttpError(404, `snapshot ${id} not found`);
  }));

  r.get("/series", h((req) => {
    const q = query(req, ["worker", "instance", "metric", "from", "to", "limit"]);
    if ((q.worker === undefined) === (q.instance === undefined) || q.metric === undefined) throw new HttpError(400, "metric and exactly one of worker and instance are required");
    const w = q.worker !== undefined ? workerOr404(q.worker) : undefined;
    if (!store.hasMetric(q.metric)) throw new HttpError(404, `metric '${q.metric}' not known (GET /api/metrics/names)`);
    const from = q.from !== undefined ? parseTime(q.from, "from") : 0;
    const to = q.to !== undefined ? parseTime(q.to, "to") : Number.MAX_VALUE;
    const limit = parseLimit(q.limit, 100000, 1000000);
    if (!w) return instanceSeries(store, q.instance!, q.metric, from, to, limit);
    return { worker: w.key, metric: q.metric, points: store.series(w.id, q.metric, from, to, limit) };
  }));

  r.get("/metrics/names", h((req) => {
    query(req, []);
    return store.metricNames();
  }));

  r.get("/diff", h((req, res) => {
    const t = performance.now();
    const d = diff(req);
    res.setHeader("Server-Timing", `diff;dur=${(performance.now() - t).toFixed(3)}`);
    return d;
  }));

  const diff = (req: Request) => {
    const q = query(req, ["a", "b", "worker", "instance", "from", "to"]);
    if (q.a !== undefined || q.b !== undefined) {
      if (q.a === undefined || q.b === undefined) throw new HttpError(400, "a and b (snapshot ids) go together");
      if (q.worker !== undefined || q.instance !== undefined || q.from !== undefined || q.to !== undefined) {
        throw new HttpError(400, "give either a and b, or worker|instance with from and to");
      }
      return diffSnapshots(store, parseId(q.a, "a"), parseId(q.b, "b"));
    }
    if ((q.worker === undefined) === (q.instance === undefined)) throw new HttpError(400, "give a and b (snapshot ids), or exactly one of worker and instance with from (and to)");
    if (q.from === undefined) throw new HttpError(400, "from is required with worker or instance");
    const from = parseTime(q.from, "from");
    const to = q.to !== undefined ? parseTime(q.to, "to") : Date.now() / 1000;
    return diffTimes(store, { worker: q.worker, instance: q.instance }, from, to);
  };

  r.get("/suspects", h((req) => {
    const q = query(req, ["window", "instance", "worker"]);
    const window = q.window !== undefined ? parseDuration(q.window, "window") : 600;
    return suspectsFor(store, { instance: q.instance, worker: q.worker }, window);
  }));

  // ---- the guided-analysis report (control-plane/src/report/) ----
  r.get("/report", async_(async (req, res) => {
    const q = query(req, ["worker", "instance", "window", "from", "to", "format", "callpaths"]);
    const fmt = (q.format ?? "json") as ReportFormat;
    if (!REPORT_FORMATS.includes(fmt)) throw new HttpError(400, `format: expected ${REPORT_FORMATS.join(", ")} (got '${q.format}')`);
    if (q.callpaths !== undefined && q.callpaths !== "fresh" && q.callpaths !== "stored") throw new HttpError(400, `callpaths: expected 'fresh' or 'stored' (got '${q.callpaths}')`);
    if (q.window !== undefined && q.from !== undefined) throw new HttpError(400, "give window or from (with to), not both");
    const now = Date.now() / 1000;
    const sel = {
      worker: q.worker,
      instance: q.instance,
      window_s: q.window !== undefined ? parseDuration(q.window, "window") : DEFAULT_REPORT_WINDOW_S,
      from: q.from !== undefined ? parseTime(q.from, "from", now) : undefined,
      to: q.to !== undefined ? parseTime(q.to, "to", now) : undefined,
    };
    const reach = { control_plane_url: `${req.protocol}://${req.get("host") ?? "127.0.0.1"}` };
    let { input, worker } = reportInputFromStore(store, callpaths(), sel, reach, now);
    if ((q.callpaths ?? "fresh") === "fresh" && worker.state === "live" && sel.to === undefined) {
      // the sampler's current view, when the worker is connected and armed; stored like any fetch
      try {
        await fetchCallpaths(worker.key, { limit: 200 }, false, 5000);
        ({ input } = reportInputFromStore(store, callpaths(), { ...sel, worker: worker.key }, reach, now));
      } catch (e) {
        input = { ...input, callpaths_error: (e as Error).message };
      }
    }
    const report = buildReport(input);
    if (fmt === "json") return report;
    res.type(REPORT_CONTENT_TYPE[fmt]).send(renderReport(report, fmt));
  }));

  r.use((req: Request, _res: Response, next: NextFunction) => next(new HttpError(404, `no such endpoint: ${req.method} /api${req.path}`)));
  return r;
}

/** [sampler commands] args of sampler_arm: {rate?, depth?, aligned?} (numbers / boolean) */
function commandArgs(v: unknown): Record<string, number | boolean> | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) throw new HttpError(400, "args: expected an object");
  const out: Record<string, number | boolean> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (k === "rate" || k === "depth") {
      if (typeof x !== "number" || !Number.isInteger(x) || x < 1) throw new HttpError(400, `args.${k}: expected a positive integer`);
      out[k] = x;
    } else if (k === "aligned") {
      if (typeof x !== "boolean") throw new HttpError(400, "args.aligned: expected a boolean");
      out[k] = x;
    } else throw new HttpError(400, `args: unknown key '${k}'; valid: rate, depth, aligned`);
  }
  return out;
}

/** JSON errors for the API: HttpError → its status, anything else → 500 (logged) */
export function apiErrors(log: Logger) {
  return (err: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    if (err instanceof HttpError) {
      res.status(err.status).json({ error: err.message });
      return;
    }
    const e = err as { status?: number; type?: string; message?: string };
    if (e && typeof e.status === "number" && e.status >= 400 && e.status < 500) {
      res.status(e.status).json({ error: e.message ?? "bad request" });
      return;
    }
    log.error(`api: ${(err as Error)?.stack ?? String(err)}`);
    res.status(500).json({ error: "internal error (see the control plane log)" });
  };
}
