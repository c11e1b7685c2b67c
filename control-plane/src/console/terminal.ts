/**
 * `memdiag console`: a top-like live view of the control plane in a terminal
 * (plain ANSI, fits 80×24, works over ssh). `--once` prints one frame and exits.
 *
 *   memdiag console [--url http://127.0.0.1:9146] [--token T] [--once] [--worker KEY|PID] [--window 10m]
 */
import { ControlPlane } from "./client";
import { Model, renderFrame, layerRows } from "./render";
import { parseFlags, parseWindow, fmtWindow, clock } from "./text";
import { loadConfig } from "../../../scripts/config";
import { fetchCallpaths, latestCallpaths } from "./callpaths";
import { Diff, LiveMsg, Suspect, WorkerInfo } from "../protocol";

const WINDOWS = [60, 300, 600, 1800, 3600, 6 * 3600];

interface ConsoleState {
  windowS: number;
  selected?: string;
  /** --worker as given: a key, or a pid */
  wanted?: string;
  live: boolean | null;
  status?: string;
  statusUntil?: number;
}

export function defaultUrl(): string {
  try {
    const cfg = loadConfig();
    return `http://${cfg.control_plane.listen}`;
  } catch {
    return "http://127.0.0.1:9146";
  }
}

function pickWorker(ws: WorkerInfo[], st: ConsoleState, suspects: Suspect[]): string | undefined {
  if (st.wanted) {
    const w = ws.find((x) => x.key === st.wanted) ?? ws.filter((x) => String(x.pid) === st.wanted).sort((a, b) => b.last_seen - a.last_seen)[0];
    if (w) return w.key;
  }
  if (st.selected && ws.some((w) => w.key === st.selected)) return st.selected;
  // first look: the worker of the top suspect, else the largest live worker
  const top = suspects.find((s) => s.worker && ws.some((w) => w.key === s.worker && w.state === "live")) ?? suspects.find((s) => s.worker && ws.some((w) => w.key === s.worker));
  if (top?.worker) return top.worker;
  const live = ws.filter((w) => w.state === "live").sort((a, b) => (b.rss_bytes ?? 0) - (a.rss_bytes ?? 0));
  return (live[0] ?? [...ws].sort((a, b) => b.last_seen - a.last_seen)[0])?.key;
}

/** everything one frame needs, asked from the control plane */
export async function buildModel(cp: ControlPlane, st: ConsoleState): Promise<Model> {
  const now = Date.now() / 1000;
  const m: Model = { url: cp.base, window_s: st.windowS, now, live: st.live, workers: [], rss_change: {}, layers: [], suspects: [] };
  if (st.status && st.statusUntil && st.statusUntil > now) m.status = st.status;
  try {
    m.workers = await cp.workers();
  } catch (e) {
    m.error = (e as Error).message;
    return m;
  }
  try {
    m.suspects = await cp.suspects(st.windowS);
  } catch (e) {
    m.error = (e as Error).message;
  }
  st.selected = pickWorker(m.workers, st, m.suspects);
  if (st.wanted && st.selected && m.workers.find((w) => w.key === st.selected)) st.wanted = undefined;
  m.selected = st.selected;
  const from = now - st.windowS;

  const jobs: Promise<unknown>[] = [];
  // RSS change over the window, per live worker (at most 12)
  for (const w of m.workers.filter((x) => x.state === "live" || x.key === st.selected).slice(0, 12)) {
    jobs.push(
      cp.series(w.key, "system.rss_bytes", from, now + 60).then((pts) => {
        if (pts.length >= 2) m.rss_change[w.key] = pts[pts.length - 1].v - pts[0].v;
      }, () => undefined),
    );
  }
  if (st.selected) jobs.push(loadLayers(cp, st.selected, from, now, m));
  // [call paths] the newest stored fetch (no request to the worker; key c fetches a fresh one)
  if (st.selected) jobs.push(latestCallpaths(cp, st.selected).then((v) => void (m.callpaths = v), () => undefined));
  await Promise.all(jobs);
  return m;
}

async function loadLayers(cp: ControlPlane, key: string, from: number, now: number, m: Model): Promise<void> {
  try {
    // GET /api/diff?worker=&from=&to= compares the worker's state at two times (its deep-scan part
    // from the latest deep snapshot); from=0 starts at its first snapshot
    const k = encodeURIComponent(key);
    const [ds, dw, recent] = await Promise.all([
      cp.get<Diff>(`/api/diff?worker=${k}&from=0&to=${now + 60}`),
      cp.get<Diff>(`/api/diff?worker=${k}&from=${from}&to=${now + 60}`),
      cp.snapshots(key, from, now + 60, 100000),
    ]);
    m.layers = layerRows(ds.rows, dw.rows);
    m.start_time = ds.a.time;
    m.latest_time = ds.b.time;
    const deep = recent.filter((s) => s.deep).sort((a, b) => b.time - a.time);
    if (deep.length) m.latest_deep_time = deep[0].time;
    // pool groups come from deep scans only: when the window starts before the first one, show the
    // group total from the deep scans in the window (change over their span)
    if (deep.length && !m.layers.some((l) => l.label === "unrooted pools")) {
      const d = await cp.diffIds(deep[deep.length - 1].id, deep[0].id);
      for (const l of layerRows(undefined, d.rows)) if (l.label === "unrooted pools") m.layers.push(deep.length > 1 ? l : { ...l, window: null, count_window: null });
    }
  } catch (e) {
    const msg = (e as Error).message;
    if (!/no snapshots/.test(msg)) m.error = `layers: ${msg}`;
  }
}

function frameSize(interactive: boolean): { width: number; height: number } {
  if (!interactive) return { width: Math.min(process.stdout.columns || 80, 80), height: 60 };
  return { width: Math.max(60, process.stdout.columns || 80), height: Math.max(16, process.stdout.rows || 24) };
}

export async function consoleMain(argv: string[]): Promise<number> {
  let flags: Record<string, string | boolean>;
  let windowS = 600;
  try {
    flags = parseFlags(argv, { url: "string", token: "string", once: "bool", worker: "string", window: "string", help: "bool" });
    if (flags.window) windowS = parseWindow(String(flags.window));
  } catch (e) {
    process.stderr.write(`memdiag console: ${(e as Error).message}\n`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write("usage: memdiag console [--url http://127.0.0.1:9146] [--token T] [--once] [--worker KEY|PID] [--window 10m]\n");
    return 0;
  }
  const token = String(flags.token ?? process.env.MEMDIAG_TOKEN ?? safeToken());
  const cp = new ControlPlane(String(flags.url ?? process.env.MEMDIAG_URL ?? defaultUrl()), token);
  const st: ConsoleState = { windowS, wanted: flags.worker ? String(flags.worker) : undefined, live: null };
  const color = !process.env.NO_COLOR && !!process.stdout.isTTY;

  if (flags.once || !process.stdin.isTTY || !process.stdout.isTTY) {
    const m = await buildModel(cp, st);
    const { width, height } = frameSize(false);
    process.stdout.write(renderFrame(m, { width, height, color, keys: false }));
    return m.error && m.workers.length === 0 ? 1 : 0;
  }
  return interactive(cp, st, color);
}

export function safeToken(): string {
  try {
    return loadConfig().token;
  } catch {
    return "";
  }
}

async function interactive(cp: ControlPlane, st: ConsoleState, color: boolean): Promise<number> {
  const out = process.stdout;
  out.write("\x1b[?1049h\x1b[?25l"); // alternate screen, hide cursor
  let stopped = false;
  let drawing = false;
  let again = false;
  let lastWorkers: WorkerInfo[] = [];
  const draw = async (): Promise<void> => {
    if (stopped) return;
    if (drawing) {
      again = true;
      return;
    }
    drawing = true;
    try {
      const m = await buildModel(cp, st);
      lastWorkers = m.workers;
      if (stopped) return;
      const { width, height } = frameSize(true);
      out.write("\x1b[H\x1b[2J" + renderFrame(m, { width, height, color, keys: true }).replace(/\n$/, ""));
    } finally {
      drawing = false;
      if (again) {
        again = false;
        void draw();
      }
    }
  };
  // redraw on live updates (at most once a second) and every 5 s regardless
  let pending: NodeJS.Timeout | undefined;
  const soon = (): void => {
    if (!pending) pending = setTimeout(() => {
      pending = undefined;
      void draw();
    }, 1000);
  };
  const live = cp.live(
    (msg: LiveMsg | { type: string; worker?: string; ok?: boolean; error?: string }) => {
      if (msg.type === "command_result") {
        const r = msg as { ok?: boolean; error?: string };
        setStatus(st, r.ok ? "deep scan accepted by the worker; results arrive with its next snapshot" : `deep scan failed: ${r.error ?? "?"}`);
      }
      if (msg.type === "snapshot" && st.statusUntil && (msg as LiveMsg & { type: "snapshot" }).worker.key === st.selected) {
        const sm = (msg as { summary?: { metrics?: Record<string, number>; time: number } }).summary;
        if (sm?.metrics && Object.keys(sm.metrics).some((k) => k.startsWith("pool.unrooted_total.") || k.startsWith("size_class_total."))) {
          setStatus(st, `deep scan done at ${clock(sm.time)}`);
        }
      }
      soon();
    },
    (up) => {
      st.live = up;
      soon();
    },
  );
  const tick = setInterval(() => void draw(), 5000);
  out.on("resize", () => void draw());

  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      clearInterval(tick);
      if (pending) clearTimeout(pending);
      live.close();
      stdin.setRawMode(false);
      stdin.pause();
      out.write("\x1b[?25h\x1b[?1049l");
      resolve(0);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
    stdin.on("data", (buf: Buffer) => {
      const k = buf.toString("utf8");
      if (k === "q" || k === "\x03" || k === "\x1b") return stop();
      if (k === "\x1b[A" || k === "k" || k === "\x1b[B" || k === "j" || k === "\t") {
        const ws = [...lastWorkers].sort((a, b) => (a.state === b.state ? a.pid - b.pid : a.state === "live" ? -1 : 1));
        if (!ws.length) return;
        const i = ws.findIndex((w) => w.key === st.selected);
        const up = k === "\x1b[A" || k === "k";
        st.selected = ws[(i + (up ? -1 : 1) + ws.length) % ws.length].key;
        void draw();
      } else if (k === "w") {
        const i = WINDOWS.indexOf(st.windowS);
        st.windowS = WINDOWS[(i + 1) % WINDOWS.length];
        setStatus(st, `window ${fmtWindow(st.windowS)}`);
        void draw();
      } else if (k === "d") {
        const key = st.selected;
        if (!key) return;
        setStatus(st, `deep scan requested from pid ${lastWorkers.find((w) => w.key === key)?.pid ?? "?"}…`);
        cp.command(key, "deep").then(
          (r) => followCommand(cp, st, (r as { id?: string } | null)?.id, () => void draw()),
          (e) => setStatus(st, `deep scan request failed: ${(e as Error).message}`),
        ).finally(() => void draw());
        void draw();
      } else if (k === "c") {
        // [call paths] fetch the outstanding allocations by call path from the worker's sampler
        const key = st.selected;
        if (!key) return;
        setStatus(st, "fetching call paths from the worker…");
        fetchCallpaths(cp, key).then(
          (v) => setStatus(st, `call paths fetched: ${v.paths_total} paths`),
          (e) => setStatus(st, `call paths: ${(e as Error).message}${/never armed/.test((e as Error).message) ? " (arm: /_memdiag?sampler=arm, or the web console)" : ""}`),
        ).finally(() => void draw());
        void draw();
      } else if (k === "r") {
        void draw();
      }
    });
    void draw();
  });
}

/** follow a command (GET /api/commands/:id) until a snapshot answers it, it fails, or 2 min pass */
async function followCommand(cp: ControlPlane, st: ConsoleState, id: string | undefined, redraw: () => void): Promise<void> {
  if (!id) return;
  for (let i = 0; i < 120; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    let c: { state?: string; snapshot_id?: number; error?: string };
    try {
      c = await cp.get(`/api/commands/${encodeURIComponent(id)}`);
    } catch {
      continue;
    }
    if (c.snapshot_id) {
      setStatus(st, `deep scan done at ${clock(Date.now() / 1000)} (snapshot ${c.snapshot_id})`);
      return redraw();
    }
    if (c.state === "failed" || c.state === "timeout") {
      setStatus(st, `deep scan ${c.state === "timeout" ? "timed out" : "failed"}${c.error ? ": " + c.error : ""}`);
      return redraw();
    }
  }
}

function setStatus(st: ConsoleState, s: string): void {
  st.status = s;
  st.statusUntil = Date.now() / 1000 + 30;
}
