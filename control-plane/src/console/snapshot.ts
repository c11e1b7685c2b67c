/**
 * `memdiag snapshot`: ask the local nginx's /_memdiag for every worker's latest
 * snapshot and print it as a table (one column per worker), or raw with --json.
 *
 *   memdiag snapshot [--port 9145] [--host 127.0.0.1] [--json] [--pid N] [--fresh]
 */
import * as http from "http";
import { fmtBytes, fmtRange, classMax } from "../format";
import { padLeft, padRight, parseFlags, clock, wrap } from "./text";
import { loadConfig } from "../../../scripts/config";

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function get(host: string, port: number, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, headers, agent: false, timeout: 15000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

const LABEL = 20;
const COL = 15;

interface Row {
  label: string;
  cells: string[];
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}
const b = (v: unknown): string => (num(v) === undefined ? "–" : fmtBytes(num(v)!));

/** the rows of the per-worker table */
export function snapshotRows(ws: Obj[]): Row[] {
  const rows: Row[] = [];
  const row = (label: string, f: (s: Obj) => string): void => {
    const cells = ws.map((s) => {
      try {
        return f(s);
      } catch {
        return "–";
      }
    });
    if (cells.some((c) => c !== "" && c !== "–")) rows.push({ label, cells });
  };
  row("worker slot", (s) => (s.worker_id === null || s.worker_id === undefined ? "–" : String(s.worker_id)));
  row("snapshot", (s) => `#${s.seq} ${clock(s.time)}`);
  row("RSS", (s) => b(s.system?.rss_bytes));
  row("  anonymous", (s) => b(s.system?.anon_bytes));
  row("  file-backed", (s) => b(s.system?.file_bytes));
  row("  shared", (s) => b(s.system?.shmem_bytes));
  row("swap", (s) => b(s.system?.swap_bytes));
  row("VmData", (s) => b(s.system?.vm_data_bytes));
  row("explained", (s) => (num(s.system?.explained_ratio) === undefined ? "–" : `${Math.round(s.system.explained_ratio * 100)}%`));
  // regions by class (RSS when the agent reports it, else size)
  const REGION_LABEL: Record<string, string> = {
    glibc_heap: "glibc heap", luajit: "LuaJIT", shm_zone: "shm zones", stack: "stacks", code: "code", file: "files", other_anon: "other anon",
  };
  if (ws.some((s) => Array.isArray(s.system?.regions) && s.system.regions.length)) rows.push({
      label: "regions (RSS)",
      // classified every regions_every_s seconds, not at every snapshot: say how old when it is
      cells: ws.map((s) => ((num(s.system?.regions_age_s) ?? 0) >= 1 ? `as of ${Math.round(s.system.regions_age_s)} s ago` : "")),
    });
  const classes = new Set<string>();
  for (const s of ws) for (const r of s.system?.regions ?? []) classes.add(r.class);
  for (const c of ["glibc_heap", "luajit", "shm_zone", "stack", "code", "file", "other_anon"].filter((x) => classes.has(x))) {
    row(`  ${REGION_LABEL[c] ?? c}`, (s) => {
      let t = 0;
      let any = false;
      for (const r of s.system?.regions ?? []) if (r.class === c) {
        t += num(r.rss_bytes) ?? num(r.bytes) ?? 0;
        any = true;
      }
      return any ? fmtBytes(t) : "–";
    });
  }
  row("glibc arena", (s) => b(s.glibc?.arena_bytes));
  row("glibc in use", (s) => b(s.glibc?.in_use_bytes));
  row("glibc free", (s) => b(s.glibc?.free_bytes));
  row("glibc mmapped", (s) => (s.glibc?.mmap_bytes === undefined ? "–" : `${b(s.glibc.mmap_bytes)} (${s.glibc.mmap_chunks ?? "?"})`));
  row("glibc", (s) => (s.glibc?.error ? `error: ${s.glibc.error}` : ""));
  row("LuaJIT GC heap", (s) => b(s.luajit?.gc_bytes));
  const zones = new Set<string>();
  for (const s of ws) for (const z of s.shm ?? []) zones.add(z.name);
  for (const z of zones) {
    row(`shm ${z}`, (s) => {
      const e = (s.shm ?? []).find((x: Obj) => x.name === z);
      if (!e) return "–";
      return e.used_bytes === undefined ? b(e.size_bytes) : `${b(e.used_bytes)}/${b(e.size_bytes).replace(".0 ", " ")}`;
    });
  }
  row("pools", (s) => (s.pools?.available ? "" : `unavailable`));
  for (const kind of ["cycle", "connection", "request"]) {
    row(`  ${kind} pools`, (s) => {
      const g = (s.pools?.groups ?? []).find((x: Obj) => x.kind === kind);
      return g ? `${g.pools} · ${fmtBytes((g.block_bytes ?? 0) + (g.large_bytes ?? 0))}` : "–";
    });
  }
  row("  connections", (s) => (s.pools?.connections ? `${s.pools.connections.active}/${s.pools.connections.connection_n}` : "–"));
  row("  unrooted pools", (s) => {
    const u = s.pools?.unrooted;
    if (!Array.isArray(u)) return "–";
    const n = u.reduce((a: number, g: Obj) => a + (g.pools ?? 0), 0);
    const by = u.reduce((a: number, g: Obj) => a + (g.block_bytes ?? 0) + (g.large_bytes ?? 0), 0);
    return `${n} · ${fmtBytes(by)}`;
  });
  row("deep scan", (s) => {
    if (!s.scan) return "–";
    const st = String(s.scan.state ?? "?");
    if (st === "done" && num(s.scan.ms_total) !== undefined) return `${Math.round(s.scan.ms_total)} ms`;
    return st;
  });
  row("collect", (s) => (num(s.collect_ms) === undefined ? "–" : `${s.collect_ms.toFixed(1)} ms`));
  row("skipped", (s) => {
    const n = Object.values(s.skipped ?? {}).reduce((a: number, v) => a + (num(v) ?? 0), 0);
    return n === 0 ? "none" : String(n);
  });
  return rows;
}

function table(ws: Obj[]): string {
  const lines: string[] = [];
  for (let i = 0; i < ws.length; i += 4) {
    const part = ws.slice(i, i + 4);
    lines.push(padRight("", LABEL) + part.map((s) => padLeft(`pid ${s.pid}`, COL)).join(""));
    for (const r of snapshotRows(part)) lines.push(padRight(r.label, LABEL) + r.cells.map((c) => padLeft(c, COL)).join(""));
    if (i + 4 < ws.length) lines.push("");
  }
  return lines.map((l) => l.replace(/\s+$/, "")).join("\n");
}

/** the largest unrooted pool groups of one worker (deep scan), each cut to 80 columns */
function unrootedGroups(s: Obj): string[] {
  const out: string[] = [];
  const groups: Obj[] = Array.isArray(s.pools?.unrooted) ? [...s.pools.unrooted] : [];
  if (!groups.length) return out;
  const bytes = (g: Obj): number => (g.block_bytes ?? 0) + (g.large_bytes ?? 0);
  groups.sort((x, y) => bytes(y) - bytes(x));
  out.push(`unrooted pool groups of pid ${s.pid} (deep scan; largest first):`);
  for (const g of groups.slice(0, 5)) {
    const n = `${g.pools} pool${g.pools === 1 ? "" : "s"}`;
    out.push(padRight(`  ${padLeft(n, 10)} ${padLeft(fmtBytes(bytes(g)), 9)}  held by ${g.owner}`, 80).replace(/\s+$/, ""));
    const cl = (g.cleanups ?? []).map((c: Obj) => c.handler).join(", ") || "none";
    for (const l of wrap(`via ${g.retainer || "–"}; cleanups: ${cl}`, 70, 2)) out.push(`        ${l}`);
  }
  if (groups.length > 5) out.push(`  … ${groups.length - 5} more groups`);
  return out;
}

/** heap chunks by size class (deep scan), one column per worker */
function sizeClassTable(ws: Obj[]): string[] {
  const withClasses = ws.filter((s) => Array.isArray(s.glibc?.size_classes) && s.glibc.size_classes.length);
  if (!withClasses.length) return [];
  const out = ["heap chunks by size (deep scan): chunks · bytes"];
  for (let i = 0; i < withClasses.length; i += 4) {
    const part = withClasses.slice(i, i + 4);
    const mins = new Set<number>();
    for (const s of part) for (const c of s.glibc.size_classes) if (c.chunks > 0) mins.add(c.min_bytes);
    out.push(padRight("", LABEL) + part.map((s) => padLeft(`pid ${s.pid}`, COL)).join(""));
    for (const min of [...mins].sort((a, b) => a - b)) {
      const cells = part.map((s) => {
        const c = s.glibc.size_classes.find((x: Obj) => x.min_bytes === min);
        return c && c.chunks > 0 ? `${c.chunks} · ${fmtBytes(c.bytes)}` : "–";
      });
      out.push(padRight(`  ${fmtRange(min, classMax(min))}`, LABEL) + cells.map((c) => padLeft(c, COL)).join(""));
    }
  }
  return out;
}

export function renderSnapshot(body: Obj): string {
  const ws: Obj[] = Array.isArray(body.workers) ? [...body.workers].sort((a, b) => a.pid - b.pid) : [];
  if (!ws.length) return "no worker has published a snapshot yet (the agent collects every few seconds; try --fresh)\n";
  const s0 = ws[0];
  const head = `nginx ${s0.nginx_version} · host ${s0.host} · agent ${s0.agent_version} · ${ws.length} worker${ws.length === 1 ? "" : "s"}`;
  const notes: string[] = [];
  const layoutErr = ws.find((s) => s.layout_error)?.layout_error;
  if (layoutErr) notes.push(`pools: ${layoutErr}`);
  const out = [head, `instance ${s0.instance ?? "?"}`, "", table(ws)];
  for (const s of ws) {
    const d = unrootedGroups(s);
    if (d.length) out.push("", ...d);
  }
  const sc = sizeClassTable(ws);
  if (sc.length) out.push("", ...sc);
  if (notes.length) out.push("", ...notes.map((n) => `note: ${n}`));
  return out.join("\n") + "\n";
}

export async function snapshotMain(argv: string[]): Promise<number> {
  let flags: Record<string, string | boolean>;
  try {
    flags = parseFlags(argv, { port: "string", host: "string", json: "bool", pid: "string", fresh: "bool", help: "bool" });
  } catch (e) {
    process.stderr.write(`memdiag snapshot: ${(e as Error).message}\n`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write("usage: memdiag snapshot [--port 9145] [--host 127.0.0.1] [--json] [--pid N] [--fresh]\n");
    return 0;
  }
  let host = "127.0.0.1";
  let port = 9145;
  let token = process.env.MEMDIAG_TOKEN ?? "";
  try {
    const cfg = loadConfig();
    if (!token) token = cfg.agent.token ?? cfg.token;
    const m = /^(.*):(\d+)$/.exec(cfg.listen);
    if (m) {
      port = Number(m[2]);
      if (m[1] && m[1] !== "0.0.0.0" && m[1] !== "*" && m[1] !== "[::]") host = m[1].replace(/^\[|\]$/g, "");
    }
  } catch {
    /* defaults */
  }
  if (flags.port) port = Number(flags.port);
  if (flags.host) host = String(flags.host);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write(`memdiag snapshot: --port must be a TCP port, got '${flags.port}'\n`);
    return 2;
  }
  if (flags.pid !== undefined && !/^\d+$/.test(String(flags.pid))) {
    process.stderr.write(`memdiag snapshot: --pid must be a number, got '${flags.pid}'\n`);
    return 2;
  }
  const q = new URLSearchParams();
  if (flags.pid) q.set("pid", String(flags.pid));
  if (flags.fresh) q.set("fresh", "1");
  const path = "/_memdiag" + (q.toString() ? `?${q}` : "");
  let r: { status: number; body: string };
  try {
    // --fresh changes the worker: a non-loopback /_memdiag wants the shared token for it
    r = await get(host, port, path, flags.fresh && token ? { Authorization: `Bearer ${token}` } : {});
  } catch (e) {
    process.stderr.write(`memdiag snapshot: cannot reach nginx at http://${host}:${port}${path} (${(e as Error).message}).\n` +
      `Is nginx running with the memdiag include line? The port is "listen" in memdiag.config.json.\n`);
    return 1;
  }
  if (r.status !== 200) {
    let msg = r.body.trim();
    try {
      msg = JSON.parse(r.body).error ?? msg;
    } catch {
      /* not JSON */
    }
    process.stderr.write(`memdiag snapshot: ${r.status} from /_memdiag: ${msg}\n`);
    return 1;
  }
  if (flags.json) {
    process.stdout.write(r.body.endsWith("\n") ? r.body : r.body + "\n");
    return 0;
  }
  let body: Obj;
  try {
    body = JSON.parse(r.body);
  } catch {
    process.stderr.write("memdiag snapshot: /_memdiag did not answer JSON\n");
    return 1;
  }
  process.stdout.write(renderSnapshot(body));
  return 0;
}
