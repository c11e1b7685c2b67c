/**
 * GET /metrics: Prometheus text format 0.0.4. One gauge family per layer field,
 * labelled by worker (nginx_instance, worker key, pid, host); values come from
 * the latest stored snapshot of every live worker (no database reads).
 * `nginx_instance` rather than `instance`, which Prometheus sets itself.
 */
import { LiveWorkerUpdate } from "./protocol";
import { splitSuffix, OWNER_SUFFIXES, UNROOTED_SUFFIXES, SIZE_CLASS_SUFFIXES, SHM_SUFFIXES, REGION_SUFFIXES } from "./summary";

interface Family {
  help: string;
  type: "gauge" | "counter";
  samples: string[];
}

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function fmt(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** metric name of the summary → Prometheus family + extra labels; undefined when not exported */
export function promName(name: string, owners: Record<string, { owner: string }> = {}): { family: string; help: string; labels: Record<string, string> } | undefined {
  let m: RegExpExecArray | null;
  if ((m = /^system\.(\w+)$/.exec(name))) return { family: `memdiag_system_${m[1]}`, help: `worker ${m[1]} (/proc status / maps)`, labels: {} };
  if ((m = /^glibc\.(\w+)$/.exec(name))) return { family: `memdiag_glibc_${m[1]}`, help: `glibc malloc ${m[1]}`, labels: {} };
  if (name === "luajit.gc_bytes") return { family: "memdiag_luajit_gc_bytes", help: "LuaJIT GC heap (collectgarbage count)", labels: {} };
  if (name === "luajit.gc_floor_bytes") return { family: "memdiag_luajit_gc_floor_bytes", help: "LuaJIT heap at the end of a GC cycle (what survived collection)", labels: {} };
  if ((m = /^agent\.(\w+)$/.exec(name))) return { family: `memdiag_agent_${m[1]}`, help: `agent ${m[1]} of the latest snapshot`, labels: {} };
  if ((m = /^pool\.(cycle|connection|request)\.(\w+)$/.exec(name))) return { family: `memdiag_pool_${m[2]}`, help: `rooted nginx pools: ${m[2]}`, labels: { kind: m[1] } };
  if ((m = /^pool\.connections\.(\w+)$/.exec(name))) return { family: `memdiag_connections_${m[1]}`, help: `nginx connections ${m[1]}`, labels: {} };
  if ((m = /^pool\.unrooted_total\.(\w+)$/.exec(name))) return { family: `memdiag_unrooted_total_${m[1]}`, help: `all unrooted pool groups: ${m[1]}`, labels: {} };
  if ((m = /^size_class_total\.(\w+)$/.exec(name))) return { family: `memdiag_size_class_total_${m[1]}`, help: `glibc chunks over all size classes: ${m[1]}`, labels: {} };
  let s = splitSuffix(name, "pool.unrooted_owner.", OWNER_SUFFIXES);
  if (s) return { family: `memdiag_unrooted_owner_${s.suffix}`, help: `all unrooted pool groups of one owner (deep scan): ${s.suffix}`, labels: { owner: s.middle } };
  s = splitSuffix(name, "pool.unrooted.", UNROOTED_SUFFIXES);
  if (s) return { family: `memdiag_unrooted_${s.suffix}`, help: `unrooted pool group (deep scan): ${s.suffix}`, labels: { signature: s.middle, owner: owners[s.middle]?.owner ?? "" } };
  s = splitSuffix(name, "size_class.", SIZE_CLASS_SUFFIXES);
  if (s) return { family: `memdiag_size_class_${s.suffix}`, help: `glibc chunks by log2 size class (deep scan): ${s.suffix}`, labels: { min_bytes: s.middle } };
  s = splitSuffix(name, "shm.", SHM_SUFFIXES);
  if (s) return { family: `memdiag_shm_${s.suffix}`, help: `shared memory zone ${s.suffix}`, labels: { zone: s.middle } };
  if (name.startsWith("region.")) {
    s = splitSuffix(name, "region.", REGION_SUFFIXES);
    const base = s ? s.middle : name.slice(7);
    const i = base.indexOf(".");
    const l = { class: i < 0 ? base : base.slice(0, i), name: i < 0 ? "" : base.slice(i + 1) };
    if (!s) return { family: "memdiag_region_bytes", help: "mapped bytes by region class", labels: l };
    return { family: `memdiag_region_${s.suffix}`, help: `region ${s.suffix} by class`, labels: l };
  }
  return undefined;
}

export interface ServerCounters {
  workers_live: number;
  workers_gone: number;
  frames: number;
  snapshots: number;
  rejected: Record<string, number>;
  store_backlog: number;
  store_ok: boolean;
  store_latency_p99_ms: number;
}

export function renderMetrics(latest: Iterable<LiveWorkerUpdate>, owners: Record<string, { owner: string }>, srv: ServerCounters): string {
  const fams = new Map<string, Family>();
  const add = (family: string, help: string, type: Family["type"], l: Record<string, string>, v: number): void => {
    let f = fams.get(family);
    if (!f) fams.set(family, (f = { help, type, samples: [] }));
    f.samples.push(`${family}${labels(l)} ${fmt(v)}`);
  };
  for (const u of latest) {
    const base = { nginx_instance: u.worker.instance, worker: u.worker.key, pid: String(u.worker.pid), host: u.worker.host };
    add("memdiag_snapshot_time_seconds", "time of the latest snapshot (unix s)", "gauge", base, u.summary.time);
    add("memdiag_snapshot_seq", "agent sequence number of the latest snapshot", "gauge", base, u.summary.seq);
    for (const [k, v] of Object.entries(u.summary.metrics)) {
      const p = promName(k, owners);
      if (p) add(p.family, p.help, "gauge", { ...base, ...p.labels }, v);
    }
  }
  add("memdiag_workers", "workers known to the control plane", "gauge", { state: "live" }, srv.workers_live);
  add("memdiag_workers", "workers known to the control plane", "gauge", { state: "gone" }, srv.workers_gone);
  add("memdiag_ingest_frames_total", "frames received from agents", "counter", {}, srv.frames);
  add("memdiag_ingest_snapshots_total", "snapshots stored", "counter", {}, srv.snapshots);
  for (const [r, n] of Object.entries(srv.rejected)) add("memdiag_ingest_rejected_total", "frames rejected, by reason", "counter", { reason: r }, n);
  add("memdiag_store_backlog", "snapshots waiting to be written (storage failing)", "gauge", {}, srv.store_backlog);
  add("memdiag_store_ok", "1 when the database is writable", "gauge", {}, srv.store_ok ? 1 : 0);
  add("memdiag_store_latency_p99_ms", "p99 ingest-to-stored latency (ms) over the last 20000 snapshots", "gauge", {}, srv.store_latency_p99_ms);
  const out: string[] = [];
  for (const [name, f] of fams) {
    out.push(`# HELP ${name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${name} ${f.type}`, ...f.samples);
  }
  return out.join("\n") + "\n";
}
