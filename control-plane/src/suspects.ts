/**
 * Leak suspects: per worker, every byte series that keeps growing beyond noise
 * across the window (trends.ts keepsGrowing), explained top-down so that one leak
 * is reported once: a specific series (an unrooted pool group, rooted pools,
 * LuaJIT, a shm zone) is always reported; a generic one (glibc, size classes,
 * regions, RSS) only when the specific suspects do not already account for most
 * of its growth. Ranked by growth (bytes/min).
 */
import { Suspect } from "./protocol";
import { Point, keepsGrowing, GrowthRules, DEFAULT_RULES, Trend } from "./trends";
import { slotOf, rowLabel } from "./diff";
import { UnrootedInfo, isDeepMetric } from "./summary";
import { fmtBytes, fmtDuration, fmtRange, classMax, signedBytes } from "./format";
import { supersededLuaSeries, survivingSeries } from "./lua-floor";
import { dropLuaAncestors, luaCount } from "./lua-series";

export interface WorkerWindow {
  worker: string;
  instance: string;
  /** the worker's start (agent clock, like snapshot times): its warm-up is not judged (GrowthRules.warmup_s) */
  worker_start?: number;
  /** the worker's snapshots in the window, oldest first */
  snapshots: { time: number; deep: boolean; metrics: Record<string, number>; unrooted: Record<string, UnrootedInfo> }[];
}

/** 0: one pool group, rooted pools, LuaJIT, a shm zone; 1: all unrooted groups of one owner; 2: allocator; 3: regions, process */
function tier(metric: string): number {
  if (metric.startsWith("pool.unrooted_owner.")) return 1;
  // a Lua table path is the specific suspect; the whole Lua heap is news only when no path tells it
  if (metric.startsWith("lua.table.")) return 0;
  if (metric.startsWith("luajit.")) return 1;
  if (metric.startsWith("lua.type.")) return 2;
  if (metric.startsWith("pool.") || metric.startsWith("luajit.") || metric.startsWith("shm.")) return 0;
  if (metric.startsWith("glibc.") || metric.startsWith("size_class.")) return 2;
  return 3;
}

const OWNER_RE = /^pool\.unrooted_owner\.(.+)\.bytes$/;

/** the byte metrics that can be suspects, and the count metric beside each */
function candidates(names: Iterable<string>): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const n of names) {
    if (OWNER_RE.test(n)) {
      out.set(n, n.replace(/\.bytes$/, ".pools"));
      continue;
    }
    const s = slotOf(n);
    if (!s || s.role !== "bytes") continue;
    let count: string | undefined;
    if (n.startsWith("pool.")) count = n.replace(/\.bytes$/, ".pools");
    else if (n.startsWith("size_class.")) count = n.replace(/\.bytes$/, ".chunks");
    else if (n === "glibc.mmap_bytes") count = "glibc.mmap_chunks";
    else if (n.startsWith("lua.")) count = luaCount(n)?.count;
    out.set(n, count);
  }
  return out;
}

/**
 * Longest run of consecutive deep snapshots a group may be missing from, between two
 * snapshots that carry it, and still count as unknown there rather than as 0 pools.
 * The agent can file a group under another signature for a scan or two (pools created
 * while a sliced scan ran); a group gone for good, or gone longer, counts as 0.
 */
export const MAX_DEEP_GAP = 2;

/**
 * Unrooted pool groups are pools nothing in nginx refers to, counted one by one: their
 * growth is retained objects from the first scan on, not warm-up, so they are judged
 * from the worker's start (and the demo's leak is found within a minute).
 */
export function warmupExempt(metric: string): boolean {
  return metric.startsWith("pool.unrooted.") || metric.startsWith("pool.unrooted_owner.");
}

/** the points of a series that are judged: after the worker's warm-up unless exempt */
export function judgedSeries(w: WorkerWindow, metric: string, rules: GrowthRules = DEFAULT_RULES): Point[] {
  const pts = seriesOf(w, metric);
  if (w.worker_start === undefined || rules.warmup_s <= 0 || warmupExempt(metric)) return pts;
  const from = w.worker_start + rules.warmup_s;
  return pts.filter((p) => p.t >= from);
}

/** series whose level includes allocator and page slack: judged against their size (GrowthRules.process_min_ratio) */
export function processLevel(metric: string): boolean {
  return metric.startsWith("system.") || metric.startsWith("region.") || metric.startsWith("luajit.");
}

/** the allowance is a share of the process's size (its RSS at the window's start), the same for all of its series */
export function rulesFor(metric: string, rssAtStart: number | undefined, rules: GrowthRules): GrowthRules {
  if (!processLevel(metric) || rssAtStart === undefined || !(rules.process_min_ratio > 0)) return rules;
  return { ...rules, min_growth: Math.max(rules.min_growth, rules.process_min_ratio * rssAtStart) };
}

export function seriesOf(w: WorkerWindow, metric: string): Point[] {
  const deep = isDeepMetric(metric);
  const pts: Point[] = [];
  if (!deep) {
    for (const s of w.snapshots) {
      const v = s.metrics[metric];
      if (v !== undefined) pts.push({ t: s.time, v });
    }
    return pts;
  }
  // deep-scan data is only in deep snapshots
  const ds = w.snapshots.filter((s) => s.deep);
  let lastSeen = -1; // index in ds of the latest snapshot carrying the metric
  for (let i = 0; i < ds.length; i++) {
    const v = ds[i].metrics[metric];
    if (v === undefined) continue;
    const gap = i - lastSeen - 1;
    if (gap > 0) {
      // before its first appearance the group did not exist yet (0); a short gap between two
      // appearances is unknown (skipped); a longer one is 0 pools
      if (lastSeen < 0 || gap > MAX_DEEP_GAP) for (let j = lastSeen + 1; j < i; j++) pts.push({ t: ds[j].time, v: 0 });
    }
    pts.push({ t: ds[i].time, v });
    lastSeen = i;
  }
  // missing from the newest deep snapshots: gone (the pools were destroyed), 0
  for (let j = lastSeen + 1; j < ds.length; j++) pts.push({ t: ds[j].time, v: 0 });
  return pts;
}

function subjectOf(metric: string, info: UnrootedInfo | undefined, label: string): string {
  if (metric.startsWith("pool.unrooted_owner.")) return "unrooted pools (all groups of this owner)";
  if (metric.startsWith("pool.unrooted.")) {
    const cs = info?.create_size !== undefined ? `create size ${info.create_size}` : "create size ?";
    const cl = info && info.cleanups.length ? info.cleanups.join(", ") : "–";
    return `unrooted pools (${cs}, cleanups: ${cl})`;
  }
  return label;
}

function ownerOf(metric: string, info: UnrootedInfo | undefined): string {
  const o = OWNER_RE.exec(metric);
  if (o) return o[1];
  if (metric.startsWith("pool.unrooted.")) return info?.owner ?? "unknown";
  if (metric.startsWith("pool.")) return `nginx (${metric.split(".")[1]} pools)`;
  if (metric.startsWith("luajit.") || metric.startsWith("lua.")) return "lua";
  if (metric.startsWith("shm.")) return `shm zone ${metric.slice(4, -".used_bytes".length)}`;
  if (metric.startsWith("glibc.") || metric.startsWith("size_class.")) return "glibc malloc";
  if (metric.startsWith("region.")) return `region ${metric.slice(7)}`;
  return "process";
}

/** the size class whose bytes grew most over the window: "256–512 KB chunks +38" */
function sizeClassEvidence(w: WorkerWindow): string | undefined {
  const deep = w.snapshots.filter((s) => s.deep);
  if (deep.length < 2) return undefined;
  const a = deep[0].metrics, b = deep[deep.length - 1].metrics;
  let best: { min: number; dBytes: number; dChunks: number } | undefined;
  for (const k in b) {
    const m = /^size_class\.(\d+)\.bytes$/.exec(k);
    if (!m) continue;
    const dBytes = b[k] - (a[k] ?? 0);
    const ck = `size_class.${m[1]}.chunks`;
    const dChunks = (b[ck] ?? 0) - (a[ck] ?? 0);
    if (dBytes > 0 && (!best || dBytes > best.dBytes)) best = { min: Number(m[1]), dBytes, dChunks };
  }
  if (!best) return undefined;
  return `${fmtRange(best.min, classMax(best.min))} chunks ${best.dChunks >= 0 ? "+" : ""}${best.dChunks}`;
}

function evidence(label: string, tr: Trend, countDelta: number | undefined, countNoun: string | undefined, extra: string | undefined): string {
  const parts = [];
  if (countDelta !== undefined && countNoun) parts.push(`${countDelta >= 0 ? "+" : ""}${countDelta} ${countNoun}`);
  parts.push(`${signedBytes(tr.delta)} in ${fmtDuration(tr.span_s)} (${fmtBytes(tr.slope_per_min)}/min, R² ${tr.r2.toFixed(2)})`);
  return `${label}: ${parts.join(", ")}${extra ? "; " + extra : ""}`;
}

export function findSuspects(workers: readonly WorkerWindow[], window_s: number, rules: GrowthRules = DEFAULT_RULES): Suspect[] {
  const all: Suspect[] = [];
  for (const w of workers) {
    if (w.snapshots.length < rules.min_points) continue;
    const names = new Set<string>();
    for (const s of w.snapshots) for (const k in s.metrics) names.add(k);
    const owners: Record<string, UnrootedInfo> = {};
    for (const s of w.snapshots) Object.assign(owners, s.unrooted);
    let passing: { metric: string; count?: string; tr: Trend; pts: Point[] }[] = [];
    const rssPts = judgedSeries(w, "system.rss_bytes", rules);
    const rssAtStart = rssPts.length ? rssPts[0].v : undefined;
    for (const [metric, count] of candidates(names)) {
      if (supersededLuaSeries(metric, names)) continue;
      const pts = survivingSeries(metric, judgedSeries(w, metric, rules));
      const v = keepsGrowing(pts, window_s, rulesFor(metric, rssAtStart, rules));
      if (v.ok) passing.push({ metric, count, tr: v.trend, pts });
    }
    passing = dropLuaAncestors(passing);
    passing.sort((x, y) => tier(x.metric) - tier(y.metric) || y.tr.slope_per_min - x.tr.slope_per_min);
    const accepted: { tier: number; growth: number; owner: string }[] = [];
    const scEvidence = sizeClassEvidence(w);
    for (const p of passing) {
      const t = tier(p.metric);
      const sig = p.metric.startsWith("pool.unrooted.") ? p.metric.slice(14, -".bytes".length) : undefined;
      const info = sig !== undefined ? owners[sig] : undefined;
      const owner = ownerOf(p.metric, info);
      if (t === 1) {
        // the owner's total is news only when its single groups do not already tell it
        const explained = accepted.filter((a) => a.tier === 0 && a.owner === owner).reduce((s, a) => s + a.growth, 0);
        if (explained >= 0.5 * p.tr.fitted_delta) continue;
      } else if (t > 1) {
        const explained = accepted.filter((a) => a.tier <= t).reduce((s, a) => s + a.growth, 0);
        if (explained >= 0.5 * p.tr.fitted_delta) continue;
      }
      accepted.push({ tier: t, growth: p.tr.fitted_delta, owner });
      const label = t === 1 && p.metric.startsWith("pool.") ? `unrooted pools held by ${owner}` : rowLabel(slotOf(p.metric)!.row, owners);
      let countDelta: number | undefined;
      if (p.count) {
        const cp = judgedSeries(w, p.count, rules);
        if (cp.length >= 2) countDelta = cp[cp.length - 1].v - cp[0].v;
      }
      const noun = p.metric.startsWith("pool.") ? "pools" : luaCount(p.metric)?.noun ?? (p.count ? "chunks" : undefined);
      const extra = p.metric.startsWith("pool.unrooted") || p.metric.startsWith("glibc.") ? scEvidence : undefined;
      all.push({
        subject: subjectOf(p.metric, info, label),
        owner,
        growth_bytes_per_min: p.tr.slope_per_min,
        r2: p.tr.r2,
        evidence: evidence(label, p.tr, countDelta, noun, extra),
        metric: p.metric,
        worker: w.worker,
        instance: w.instance,
        window_s,
        delta_bytes: p.tr.delta,
        delta_count: countDelta,
        monotonic_ratio: p.tr.monotonic_ratio,
      });
    }
  }
  all.sort((x, y) => y.growth_bytes_per_min - x.growth_bytes_per_min);
  return all;
}
