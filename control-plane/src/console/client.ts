/**
 * The terminal console's view of the control plane: REST (GET /api/...) and the
 * live feed (ws /live), with the token as `Authorization: Bearer`.
 */
import WebSocket from "ws";
import { Diff, LiveMsg, Suspect, WorkerInfo } from "../protocol";

export interface SnapshotRef {
  id: number;
  time: number;
  deep?: boolean;
  rss_bytes?: number;
}

/** the API may answer a bare array or { <key>: [...] } */
function listOf<T>(body: unknown, key: string): T[] {
  if (Array.isArray(body)) return body as T[];
  if (body && typeof body === "object" && Array.isArray((body as Record<string, unknown>)[key])) {
    return (body as Record<string, T[]>)[key];
  }
  return [];
}

export class ApiError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

export class ControlPlane {
  readonly base: string;
  constructor(url: string, readonly token = "") {
    this.base = url.replace(/\/+$/, "");
  }

  private headers(): Record<string, string> {
    const h: Record<string, string> = { Accept: "application/json" };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  async get<T = unknown>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  async post<T = unknown>(path: string, payload: unknown): Promise<T> {
    return this.request<T>("POST", path, payload);
  }

  /** one API call: the JSON body (text when not JSON), or an ApiError with the API's own message */
  private async request<T>(method: "GET" | "POST", path: string, payload?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: this.headers(), signal: AbortSignal.timeout(10000) };
    if (payload !== undefined) {
      init.headers = { ...this.headers(), "Content-Type": "application/json" };
      init.body = JSON.stringify(payload);
    }
    let r: Response;
    try {
      r = await fetch(this.base + path, init);
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code;
      throw new ApiError(`cannot reach the control plane at ${this.base} (${cause ?? (e as Error).message}); is \`memdiag serve\` running?`, 0);
    }
    const text = await r.text();
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (!r.ok) {
      const msg = body && typeof body === "object" && "error" in body ? String((body as { error: unknown }).error) : `${r.status} ${r.statusText}`;
      throw new ApiError(`${method} ${path}: ${msg}`, r.status);
    }
    return body as T;
  }

  async workers(): Promise<WorkerInfo[]> {
    return listOf<WorkerInfo>(await this.get("/api/workers"), "workers");
  }

  async suspects(windowS: number, instance?: string): Promise<Suspect[]> {
    const q = `window=${windowS}` + (instance ? `&instance=${encodeURIComponent(instance)}` : "");
    return listOf<Suspect>(await this.get(`/api/suspects?${q}`), "suspects");
  }

  async snapshots(key: string, from: number, to: number, limit: number): Promise<SnapshotRef[]> {
    const body = await this.get(`/api/workers/${encodeURIComponent(key)}/snapshots?from=${from}&to=${to}&limit=${limit}`);
    return listOf<SnapshotRef>(body, "snapshots");
  }

  async diffIds(a: number, b: number): Promise<Diff> {
    return this.get<Diff>(`/api/diff?a=${a}&b=${b}`);
  }

  async series(key: string, metric: string, from: number, to: number): Promise<{ t: number; v: number }[]> {
    const body = await this.get(`/api/series?worker=${encodeURIComponent(key)}&metric=${encodeURIComponent(metric)}&from=${from}&to=${to}`);
    const pts = Array.isArray(body) ? body : listOf<unknown>(body, "points");
    return pts.map((p) => (Array.isArray(p) ? { t: Number(p[0]), v: Number(p[1]) } : { t: Number((p as { t: number }).t), v: Number((p as { v: number }).v) }));
  }

  async command(key: string, command: "collect" | "deep"): Promise<unknown> {
    return this.post(`/api/workers/${encodeURIComponent(key)}/command`, { command });
  }

  /** the live feed; reconnects with backoff until close() */
  live(onMsg: (m: LiveMsg) => void, onState: (up: boolean) => void): { close(): void } {
    let ws: WebSocket | undefined;
    let closed = false;
    let delay = 500;
    let timer: NodeJS.Timeout | undefined;
    const url = this.base.replace(/^http/, "ws") + "/live";
    const open = (): void => {
      if (closed) return;
      ws = new WebSocket(url, { headers: this.token ? { Authorization: `Bearer ${this.token}` } : {} });
      ws.on("open", () => {
        delay = 500;
        onState(true);
      });
      ws.on("message", (data) => {
        try {
          onMsg(JSON.parse(String(data)) as LiveMsg);
        } catch {
          /* ignore a frame we cannot parse */
        }
      });
      ws.on("error", () => {
        /* close follows */
      });
      ws.on("close", () => {
        onState(false);
        if (closed) return;
        timer = setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      });
    };
    open();
    return {
      close(): void {
        closed = true;
        if (timer) clearTimeout(timer);
        ws?.close();
      },
    };
  }
}
