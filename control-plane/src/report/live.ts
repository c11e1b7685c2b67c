/**
 * The report without a control plane: two deep snapshots of one worker from a
 * local /_memdiag, `interval` seconds apart, over one keepalive connection (so the
 * same worker answers both); the sampler's call paths at both ends when it is armed.
 */
import * as http from "http";
import { summarize } from "../summary";
import { symbolizePaths } from "../callpaths";
import { Symbolizer } from "../elfsym";
import { Callpaths } from "../protocol";
import { ReportInput } from "./build";
import { nameCreationPaths } from "./creation";

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface LiveOptions {
  url: string;
  interval_s: number;
  /** report on this worker (others answering are retried on a new connection) */
  pid?: number;
  /** the shared bearer token: a deep scan changes the worker, a non-loopback /_memdiag wants it */
  token?: string;
  log?: (line: string) => void;
  /** what runs between the two snapshots: waiting the interval (tests make their changes there, then wait) */
  sleep?: (ms: number) => Promise<void>;
}

const MAX_TRIES = 16;

function get(agent: http.Agent, base: URL, q: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = token ? { Authorization: `Bearer ${token}` } : {};
    const req = http.get({ host: base.hostname, port: base.port || 80, path: `${base.pathname.replace(/\/$/, "")}/_memdiag?${q}`, headers, agent, timeout: 620000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (e) => reject(new Error(`cannot reach ${base.origin}/_memdiag (${e.message}); is nginx running with the memdiag include line?`)));
  });
}

function json(r: { status: number; body: string }, what: string): Obj {
  let b: Obj;
  try {
    b = JSON.parse(r.body);
  } catch {
    throw new Error(`${what}: ${r.status}, not JSON: ${r.body.slice(0, 200)}`);
  }
  if (r.status !== 200) throw new Error(`${what}: ${r.status} ${b.error ?? b.message ?? r.body.slice(0, 200)}`);
  return b;
}

/** the snapshot of the worker that ran the deep scan: the deep one collected last */
function answering(body: Obj): Obj | undefined {
  const ws = (Array.isArray(body.workers) ? body.workers : []) as Obj[];
  return ws.filter((w) => Array.isArray(w.pools?.unrooted) || Array.isArray(w.glibc?.size_classes)).sort((a, b) => (b.time ?? 0) - (a.time ?? 0))[0];
}

export class LiveSource {
  private agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  private readonly base: URL;
  private readonly sym = new Symbolizer();
  private pid?: number;

  constructor(private readonly o: LiveOptions) {
    this.base = new URL(o.url);
    this.pid = o.pid;
  }

  /** one deep snapshot of the chosen worker (the first answer picks it unless a pid was given) */
  private async deep(): Promise<Obj> {
    for (let i = 0; i < MAX_TRIES; i++) {
      const r = await get(this.agent, this.base, "deep=1", this.o.token);
      if (r.status === 202) {
        // that worker is scanning already: ask again shortly
        await new Promise((res) => setTimeout(res, 500));
        continue;
      }
      const s = answering(json(r, "/_memdiag?deep=1"));
      if (!s) throw new Error("/_memdiag?deep=1 answered without a deep snapshot");
      if (this.pid === undefined || s.pid === this.pid) {
        this.pid = s.pid;
        return s;
      }
      // another worker answered: a new connection may land on the wanted one
      this.agent.destroy();
      this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    }
    throw new Error(`worker ${this.pid} did not answer ${MAX_TRIES} deep-scan requests (another worker took each connection)`);
  }

  /** the sampler's outstanding call paths of the same worker; an error message when it is not armed */
  private async callpaths(id: number, pid: number): Promise<Callpaths | string> {
    const r = await get(this.agent, this.base, "sampler=top&sampler_limit=200", this.o.token);
    let b: Obj;
    try {
      b = json(r, "/_memdiag?sampler=top");
    } catch (e) {
      return (e as Error).message;
    }
    if (b.pid !== undefined && b.pid !== pid) return `the sampler answer came from worker ${b.pid}, not ${pid}`;
    return {
      id, worker: String(pid), time: Date.now() / 1000, pid, paths_total: Number(b.paths_total) || 0, est_bytes_total: Number(b.est_bytes_total) || 0,
      sampler: (b.sampler as Record<string, unknown>) ?? {}, paths: symbolizePaths(b, this.sym),
    };
  }

  async input(): Promise<ReportInput> {
    const log = this.o.log ?? (() => undefined);
    const sleep = this.o.sleep ?? ((ms: number) => new Promise<void>((res) => setTimeout(res, ms)));
    try {
      const a = await this.deep();
      const ca = await this.callpaths(1, a.pid);
      log(`deep snapshot 1 of worker ${a.pid} taken; the second in ${this.o.interval_s} s`);
      await sleep(this.o.interval_s * 1000);
      const b = await this.deep();
      const cb = await this.callpaths(2, b.pid);
      log(`deep snapshot 2 of worker ${b.pid} taken`);
      const snap = (s: Obj) => {
        const m = summarize(s);
        return { time: Number(s.time), deep: m.deep, metrics: m.metrics, unrooted: m.unrooted };
      };
      const cps = typeof ca !== "string" && typeof cb !== "string" ? { first: ca, last: cb } : typeof cb !== "string" ? { last: cb } : undefined;
      const snaps = [snap(a), snap(b)];
      nameCreationPaths(snaps, [cps?.first, cps?.last], this.sym);
      return {
        mode: "live",
        generated_at: Date.now() / 1000,
        worker: { key: `${b.instance}/${b.pid}`, instance: String(b.instance ?? "?"), pid: Number(b.pid), host: b.host, worker_start: b.worker_start },
        window: { from: Number(a.time), to: Number(b.time), seconds: Number(b.time) - Number(a.time) },
        snapshots: snaps,
        callpaths: cps,
        ...(typeof cb === "string" ? { callpaths_error: cb } : {}),
        reach: { memdiag_url: this.o.url.replace(/\/$/, "") },
      };
    } finally {
      this.agent.destroy();
    }
  }
}
