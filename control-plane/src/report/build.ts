/**
 * The report model from one worker's snapshots over a window (pure: no I/O).
 * Growth is judged with the suspects' own rules (trends.ts keepsGrowing through
 * suspects.ts judgedSeries/rulesFor, findSuspects for the owner); with only two
 * snapshots (live mode) a series grew when it rose by at least the same minimum.
 * Every sentence is made from the numbers in the step's facts.
 */
import { Callpaths, DiffRow, Suspect } from "../protocol";
import { Point, keepsGrowing, GrowthRules, DEFAULT_RULES, Trend } from "../trends";
import { WorkerWindow, findSuspects, judgedSeries, seriesOf, rulesFor } from "../suspects";
import { LUA_FLOOR } from "../lua-floor";
import { luaCount, luaTablePath } from "../lua-series";
import { State, diffStates, rowLabel } from "../diff";
import { diffCallpaths } from "../callpaths";
import { UnrootedInfo } from "../summary";
import { fmtBytes, fmtDuration, fmtRange, classMax, signedBytes } from "../format";
import { Chart, ChartSeries, Fact, Report, REPORT_VERSION, Step, Verdict } from "./model";

type Snap = WorkerWindow["snapshots"][number];

export interface ReportInput {
  mode: Report["mode"];
  generated_at: number;
  worker: Report["worker"];
  window: Report["window"];
  /** the worker's snapshots in the window, oldest first */
  snapshots: Snap[];
  /** stored (or live) call-path fetches of the worker in the window: the earliest and the latest */
  callpaths?: { first?: Callpaths; last?: Callpaths };
  /** why there are no call paths (e.g. "sampler never armed"), when known */
  callpaths_error?: string;
  /** how the reader reaches the worker, for the commands in "what to do next" */
  reach: { memdiag_url?: string; control_plane_url?: string };
  others?: Report["others"];
  rules?: GrowthRules;
}

interface OwnerSubject {
  metric: string;
  suspect?: Suspect;
  judged: Judged;
}

interface Judged {
  verdict: Verdict;
  /** the judged points */
  pts: Point[];
  /** seconds the figures cover */
  span: number;
  first?: number;
  last?: number;
  delta?: number;
  trend?: Trend;
  /** why not "grew" */
  reason?: string;
}

const pct = (x: number): string => `${Math.round(x * 100)}%`;
const signedCount = (n: number): string => `${n >= 0 ? "+" : ""}${n.toLocaleString("en-US")}`;

/** a worker window's derived series: the sum of several metrics at each snapshot carrying any of them */
function derived(snaps: readonly Snap[], pick: (k: string) => boolean, deepOnly = false): Point[] {
  const out: Point[] = [];
  for (const s of snaps) {
    if (deepOnly && !s.deep) continue;
    let v = 0, any = false;
    for (const k in s.metrics) if (pick(k)) {
      v += s.metrics[k];
      any = true;
    }
    if (any) out.push({ t: s.time, v });
  }
  return out;
}

const REGION_CLASSES: { cls: string; label: string; ruledOut?: string }[] = [
  { cls: "glibc_heap", label: "glibc heap (brk heap, arenas, mmapped chunks)" },
  { cls: "luajit", label: "LuaJIT allocator" },
  { cls: "shm_zone", label: "shm zones", ruledOut: "shared memory zones" },
  { cls: "file", label: "file mappings", ruledOut: "file mappings (page cache)" },
  { cls: "code", label: "code (nginx and its modules)", ruledOut: "code" },
  { cls: "stack", label: "stacks", ruledOut: "stacks" },
  { cls: "other_anon", label: "other anonymous memory" },
];

/** resident bytes of one region class in a snapshot (its zones summed for shm) */
const regionPick = (cls: string) => (k: string): boolean => k === `region.${cls}.rss_bytes` || (k.startsWith(`region.${cls}.`) && k.endsWith(".rss_bytes") && k.split(".").length > 3);

/** the byte metric behind a pool, shm or Lua diff row */
function rowMetricOf(r: DiffRow): string {
  if (r.section === "shm") return `${r.key}.used_bytes`;
  if (r.section === "luajit") return r.key.startsWith("lua.") ? `${r.key}.bytes` : r.key;
  return `${r.key}.bytes`;
}

export class ReportBuilder {
  private readonly rules: GrowthRules;
  private readonly w: WorkerWindow;
  private readonly twoPoint: boolean;
  private readonly rssAtStart?: number;
  private readonly deep: Snap[];
  private readonly owners: Record<string, UnrootedInfo> = {};

  constructor(private readonly input: ReportInput) {
    this.rules = input.rules ?? DEFAULT_RULES;
    this.twoPoint = input.mode === "live";
    this.w = { worker: input.worker.key, instance: input.worker.instance, worker_start: input.worker.worker_start, snapshots: input.snapshots };
    const rss = this.series("system.rss_bytes");
    this.rssAtStart = rss.length ? rss[0].v : undefined;
    this.deep = input.snapshots.filter((s) => s.deep);
    for (const s of input.snapshots) Object.assign(this.owners, s.unrooted);
  }

  private series(metric: string): Point[] {
    return this.twoPoint ? seriesOf(this.w, metric) : judgedSeries(this.w, metric, this.rules);
  }

  /**
   * grew / stable / not enough data for one series, with the suspects' rules: the verdict from
   * the judged points (after the worker's warm-up), the figures from the whole window
   */
  private judge(metric: string, pts: Point[] = this.series(metric), full: Point[] = seriesOf(this.w, metric)): Judged {
    const rules = rulesFor(metric, this.rssAtStart, this.rules);
    const all = full.length >= pts.length ? full : pts;
    const figures = all.length ? { first: all[0].v, last: all[all.length - 1].v, delta: all[all.length - 1].v - all[0].v } : {};
    const span = all.length >= 2 ? all[all.length - 1].t - all[0].t : 0;
    if (pts.length < 2) return { verdict: "not enough data", pts, span, ...figures, reason: `${pts.length} point${pts.length === 1 ? "" : "s"} to judge` };
    const base = { pts, span, ...figures };
    if (this.twoPoint) {
      const delta = pts[pts.length - 1].v - pts[0].v;
      if (delta >= rules.min_growth) return { ...base, verdict: "grew" };
      return { ...base, verdict: "stable", reason: delta > 0 ? `below the ${fmtBytes(rules.min_growth)} minimum` : "not growing" };
    }
    const v = keepsGrowing(pts, this.input.window.seconds, rules);
    if (v.ok) return { ...base, verdict: "grew", trend: v.trend };
    const thin = v.reason === "too few points" || v.reason === "covers too little of the window";
    let reason = v.reason;
    if (thin) reason = `${v.reason}: ${pts.length} points over ${fmtDuration(v.trend.span_s)} (judged: at least ${rules.min_points} over half the window, after the worker's ${rules.warmup_s} s warm-up)`;
    else if (v.reason === "growth below minimum") reason = `${signedBytes(v.trend.delta)} judged${pts[0].t > (all[0]?.t ?? pts[0].t) ? " after the worker's warm-up" : ""}, below the ${fmtBytes(rules.min_growth)} minimum`;
    return { ...base, verdict: thin ? "not enough data" : "stable", trend: v.trend, reason };
  }

  /** "+12.3 MB over 10 min (1.2 MB/min, R² 0.99)" or "+12.3 MB between the two snapshots, 60 s apart" */
  private growth(j: Judged): string {
    if (j.delta === undefined) return "no figures";
    if (this.twoPoint) return `${signedBytes(j.delta)} between the two snapshots, ${fmtDuration(j.span)} apart`;
    const fit = j.trend && j.verdict === "grew" ? ` (${fmtBytes(j.trend.slope_per_min)}/min, R² ${j.trend.r2.toFixed(2)})` : "";
    return `${signedBytes(j.delta)} over ${fmtDuration(j.span)}${fit}`;
  }

  private chartLine(label: string, pts: Point[]): ChartSeries {
    return { label, points: pts.map((p) => [p.t, p.v]) };
  }

  private fact(label: string, j: Judged, extra: Partial<Fact> = {}): Fact {
    return { label, start: j.first, now: j.last, delta: j.delta, unit: "bytes", ...extra };
  }

  system(): Step {
    const rss = this.judge("system.rss_bytes");
    const facts: Fact[] = [this.fact("RSS", rss, { key: true })];
    const classes = REGION_CLASSES.map((c) => {
      const pts = derived(this.input.snapshots, regionPick(c.cls));
      return { ...c, pts, first: pts.length ? pts[0].v : undefined, last: pts.length ? pts[pts.length - 1].v : undefined };
    }).filter((c) => c.pts.length);
    for (const c of classes) facts.push({ label: c.label, start: c.first, now: c.last, delta: c.last! - c.first!, unit: "bytes" });
    const explained = this.input.snapshots.length ? this.input.snapshots[this.input.snapshots.length - 1].metrics["system.explained_ratio"] : undefined;
    if (explained !== undefined) facts.push({ label: "RSS explained by known regions", now: explained, unit: "ratio" });
    const grown = rss.delta ?? 0;
    const biggest = classes.slice().sort((a, b) => (b.last! - b.first!) - (a.last! - a.first!))[0];
    const ruled: string[] = [];
    const allowance = Math.max(this.rules.min_growth, 0.05 * Math.max(grown, 0));
    for (const c of classes) {
      if (!c.ruledOut) continue;
      const d = c.last! - c.first!;
      if (d < allowance) ruled.push(`${c.ruledOut}: ${signedBytes(d)} (now ${fmtBytes(c.last!)}), below ${fmtBytes(allowance)}`);
    }
    const swap = seriesOf(this.w, "system.swap_bytes");
    if (swap.length && swap[swap.length - 1].v === 0) ruled.push("swap: none in use");
    let finding: string;
    const now = rss.last !== undefined ? fmtBytes(rss.last) : "unknown";
    if (rss.verdict === "grew") {
      const share = biggest && grown > 0 ? (biggest.last! - biggest.first!) / grown : 0;
      finding = `RSS is ${now}, ${this.growth(rss)}` + (biggest && share > 0 ? `; ${biggest.label} carries ${pct(Math.min(share, 1))} of the growth (${signedBytes(biggest.last! - biggest.first!)})` : "");
    } else if (rss.verdict === "stable") {
      finding = `RSS is ${now}, ${this.growth(rss)}: no sustained growth (${rss.reason})`;
    } else finding = `RSS is ${now}; not enough data to judge its growth (${rss.reason})`;
    if (explained !== undefined) finding += `; ${pct(explained)} of it is in regions with a known owner`;
    const top = classes.filter((c) => c.cls !== "other_anon").sort((a, b) => b.last! - a.last!).slice(0, 3);
    const share = biggest && grown > 0 ? Math.min(1, (biggest.last! - biggest.first!) / grown) : 0;
    const gist = rss.verdict === "grew" ? `RSS ${signedBytes(grown)} to ${now}${share > 0 ? `, ${pct(share)} of it in the ${biggest.label.replace(/ \(.*\)$/, "")}` : ""}` : undefined;
    return {
      id: "system", title: "System: what the worker's RSS is made of", verdict: rss.verdict, finding: finding + ".", gist, facts, ruled_out: ruled,
      chart: { kind: "lines", title: "RSS and its largest regions", unit: "bytes", series: [this.chartLine("RSS", seriesOf(this.w, "system.rss_bytes")), ...top.map((c) => this.chartLine(c.label.replace(/ \(.*\)$/, ""), c.pts))] },
    };
  }

  allocator(): Step {
    const inUseAll = derived(this.input.snapshots, (k) => k === "glibc.in_use_bytes" || k === "glibc.mmap_bytes");
    const ws = this.input.worker.worker_start;
    const inUse = this.judge("glibc.in_use_bytes", inUseAll.filter((p) => ws === undefined || this.twoPoint || p.t >= ws + this.rules.warmup_s), inUseAll);
    const free = this.judge("glibc.free_bytes");
    const releasable = this.judge("glibc.top_releasable_bytes");
    const mmap = this.judge("glibc.mmap_bytes");
    const arena = this.judge("glibc.arena_bytes");
    // the Lua heap is judged on what survives a collection where the agent reports it (lua-floor.ts)
    const luaFloor = this.input.snapshots.some((x) => x.metrics[LUA_FLOOR] !== undefined);
    const gcLua = this.judge(luaFloor ? LUA_FLOOR : "luajit.gc_bytes");
    // the census's live objects: steadier than the GC's running total, which saws with every cycle
    const censusAll = derived(this.input.snapshots, (k) => k.startsWith("lua.type.") && k.endsWith(".bytes"));
    const census = censusAll.length ? this.judge("luajit.gc_bytes", censusAll.filter((p) => ws === undefined || this.twoPoint || p.t >= ws + this.rules.warmup_s), censusAll) : undefined;
    const byCensus = gcLua.verdict !== "grew" && census?.verdict === "grew";
    // a Lua table that keeps growing is Lua heap that keeps growing, whatever the totals' noise
    const subj = this.subject();
    const table = subj ? luaTablePath(subj.metric) : undefined;
    const byTable = gcLua.verdict !== "grew" && !byCensus && table !== undefined && subj!.judged.verdict === "grew";
    const lua = byCensus ? census! : byTable ? subj!.judged : gcLua;
    const luaName = byCensus ? "Lua objects counted by the census" : byTable ? `Lua objects reached through ${table}` : luaFloor ? "LuaJIT heap after collection" : "LuaJIT GC heap";
    const facts: Fact[] = [
      this.fact("glibc in use (arena + mmapped chunks)", inUse, { key: true }),
      this.fact("glibc free (in the arenas)", free),
      this.fact("glibc releasable at the top", releasable),
      this.fact("glibc arena (main arena, brk)", arena),
      this.fact("glibc mmapped chunks", mmap, { note: this.countNote("glibc.mmap_chunks", "chunks") }),
      this.fact(luaFloor ? "LuaJIT heap after collection" : "LuaJIT GC heap", gcLua),
      ...(census ? [this.fact("LuaJIT: live Lua objects (census)", census)] : []),
    ].filter((f) => f.now !== undefined);
    const ruled: string[] = [];
    // mallinfo2 counts every arena; the deep scan says how much of it is thread arenas (threads' own malloc)
    const ta = derived(this.input.snapshots, (k) => k === "glibc.thread_arena_bytes", true);
    if (ta.length) {
      const heaps = this.deep.filter((x) => x.metrics["glibc.thread_arena_heaps"] !== undefined).map((x) => x.metrics["glibc.thread_arena_heaps"]);
      facts.splice(4, 0, { label: "of the arenas: thread arenas (deep scan)", start: ta[0].v, now: ta[ta.length - 1].v, delta: ta[ta.length - 1].v - ta[0].v, unit: "bytes", note: heaps.length ? `${heaps[heaps.length - 1]} heaps` : undefined });
      if (heaps.length && heaps[heaps.length - 1] === 0) ruled.push("glibc thread arenas: none (every allocation is in the main arena or mmapped)");
    }
    let verdict: Verdict;
    let finding: string;
    let gist: string | undefined;
    if (inUse.verdict === "grew") {
      verdict = "grew";
      gist = `glibc in use ${signedBytes(inUse.delta!)} (live allocations, not fragmentation)`;
      finding = `glibc memory in use ${this.growth(inUse)}: real growth of live allocations, not fragmentation (free ${free.delta !== undefined ? signedBytes(free.delta) : "unknown"}, releasable at the top ${releasable.last !== undefined ? fmtBytes(releasable.last) : "unknown"})`;
      ruled.push(`fragmentation: free memory in the arenas ${free.delta !== undefined ? signedBytes(free.delta) : "unknown"} against ${signedBytes(inUse.delta!)} in use`);
    } else if (free.verdict === "grew") {
      verdict = "grew";
      gist = `glibc free memory ${signedBytes(free.delta!)} (fragmentation, in use flat)`;
      finding = `glibc free memory ${this.growth(free)} while memory in use did not keep growing (${signedBytes(inUse.delta ?? 0)}): fragmentation or freed memory glibc keeps, not live allocations`;
    } else if (inUse.verdict === "not enough data") {
      verdict = "not enough data";
      finding = `glibc memory in use is ${inUse.last !== undefined ? fmtBytes(inUse.last) : "unknown"}; not enough data to judge its growth (${inUse.reason})`;
    } else {
      verdict = "stable";
      finding = `glibc memory in use ${inUse.last !== undefined ? fmtBytes(inUse.last) : "unknown"}, ${this.growth(inUse)}: no sustained growth (${inUse.reason})`;
    }
    if (lua.verdict === "grew") {
      verdict = "grew";
      finding += `; LuaJIT: the ${luaName} ${this.growth(lua)}`;
      const noisy = (name: string, j: Judged): string => `${name} ${signedBytes(j.delta ?? 0)}, ${j.verdict === "stable" ? `not a trend: ${j.reason}` : j.verdict}`;
      if (byCensus || byTable) finding += ` (the GC heap's running total saws with each cycle: ${noisy("running total", gcLua)}${byTable && census ? `; ${noisy("census's live objects", census)}` : ""})`;
      gist = `${gist ? gist + ", " : ""}LuaJIT: ${luaName} ${signedBytes(lua.delta!)}`;
    } else if (lua.last !== undefined) {
      finding += `; LuaJIT GC heap ${fmtBytes(lua.last)} (${signedBytes(lua.delta ?? 0)}, ${lua.verdict === "stable" ? "no sustained growth" : "not enough data"}${lua.reason ? `: ${lua.reason}` : ""})`;
      if (lua.verdict === "stable") ruled.push(`the Lua heap: ${signedBytes(lua.delta ?? 0)} (now ${fmtBytes(lua.last)})`);
    }
    return {
      id: "allocator", title: "Allocator: live allocations or fragmentation", verdict, finding: finding + ".", gist, facts, ruled_out: ruled,
      chart: { kind: "lines", title: "glibc in use, free; LuaJIT", unit: "bytes", series: [this.chartLine("glibc in use", inUseAll), this.chartLine("glibc free", seriesOf(this.w, "glibc.free_bytes")), this.chartLine("LuaJIT GC heap", seriesOf(this.w, "luajit.gc_bytes"))] },
    };
  }

  /** "2 → 130 pools (+128)" over the window (a deep-scan group is 0 before it first appears: seriesOf) */
  private countNote(metric: string, noun: string): string | undefined {
    const pts = seriesOf(this.w, metric).map((p) => p.v);
    if (pts.length < 2) return pts.length ? `${pts[0].toLocaleString("en-US")} ${noun}` : undefined;
    return `${pts[0].toLocaleString("en-US")} → ${pts[pts.length - 1].toLocaleString("en-US")} ${noun} (${signedCount(pts[pts.length - 1] - pts[0])})`;
  }

  private state(s: Snap): State {
    return { metrics: s.metrics, unrooted: s.unrooted, deep: s.deep };
  }

  /** the owner step's subject: the top specific suspect (trend) or the largest pool/shm/Lua growth (two snapshots) */
  private ownerSubject(): OwnerSubject | undefined {
    if (!this.twoPoint) {
      const specific = findSuspects([this.w], this.input.window.seconds, this.rules).filter((s) => /^(pool|luajit|lua|shm)\./.test(s.metric));
      if (specific.length) return { metric: specific[0].metric, suspect: specific[0], judged: this.judge(specific[0].metric) };
      return undefined;
    }
    const snaps = this.input.snapshots;
    if (snaps.length < 2) return undefined;
    const a = this.deep.length >= 2 ? this.deep[0] : snaps[0], b = this.deep.length >= 2 ? this.deep[this.deep.length - 1] : snaps[snaps.length - 1];
    const rows = diffStates(this.state(a), this.state(b)).filter((r) => r.section === "pool" || r.section === "shm" || r.section === "luajit");
    for (const r of rows) {
      const metric = rowMetricOf(r);
      const j = this.judge(metric);
      if (j.verdict === "grew") return { metric, judged: j };
    }
    return undefined;
  }

  /** the signature of an unrooted-group metric, or undefined */
  private sigOf(metric: string): string | undefined {
    const m = /^pool\.unrooted\.(.+)\.bytes$/.exec(metric);
    return m ? m[1] : undefined;
  }

  /** the owner step's subject, found once: the evidence, code and next steps follow it */
  private subjectFound = false;
  private subjectValue?: OwnerSubject;
  private subject(): OwnerSubject | undefined {
    if (!this.subjectFound) {
      this.subjectValue = this.ownerSubject();
      this.subjectFound = true;
    }
    return this.subjectValue;
  }

  owner(): Step {
    const snaps = this.input.snapshots;
    const facts: Fact[] = [];
    const ruled: string[] = [];
    if (snaps.length >= 2) {
      const a = this.deep.length >= 2 ? this.deep[0] : snaps[0], b = this.deep.length >= 2 ? this.deep[this.deep.length - 1] : snaps[snaps.length - 1];
      // rooted pools, shm zones and Lua from the plain snapshots; unrooted groups from the deep ones
      const plain = diffStates({ ...this.state(snaps[0]), deep: false }, { ...this.state(snaps[snaps.length - 1]), deep: false });
      const deepRows = this.deep.length >= 2 ? diffStates(this.state(a), this.state(b)).filter((r) => r.key.startsWith("pool.unrooted.")) : [];
      const rows = [...plain.filter((r) => r.section === "pool" || r.section === "shm" || r.section === "luajit"), ...deepRows]
        .sort((x, y) => Math.abs(y.delta_bytes) - Math.abs(x.delta_bytes))
        .slice(0, 8);
      for (const r of rows) {
        const metric = rowMetricOf(r);
        this.rowMetric.set(r.label, metric);
        const noun = r.section === "pool" ? "pools" : luaCount(metric)?.noun ?? "chunks";
        facts.push({ label: r.label, start: r.a_bytes, now: r.b_bytes, delta: r.delta_bytes, unit: "bytes", note: r.delta_count !== undefined ? `${r.a_count!.toLocaleString("en-US")} → ${r.b_count!.toLocaleString("en-US")} ${noun} (${signedCount(r.delta_count)})` : undefined });
      }
    }
    const subj = this.subject();
    const title = "Owner: which pool group, shm zone or Lua heap grew";
    if (!subj) {
      const noDeep = this.deep.length < 2;
      const biggest = facts[0];
      // the largest growth, judged alone: too few points for a trend is no evidence of stability
      const grown = biggest && (biggest.delta ?? 0) >= this.rules.min_growth ? this.judge(this.metricOfRow(biggest.label)) : undefined;
      const thin = grown?.verdict === "not enough data";
      const verdict: Verdict = snaps.length < 2 || thin || (noDeep && this.rssGrew()) ? "not enough data" : "stable";
      let finding = verdict === "stable"
        ? `no pool group, shm zone or the Lua heap keeps growing${biggest ? ` (largest change: ${biggest.label} ${signedBytes(biggest.delta ?? 0)})` : ""}`
        : snaps.length < 2 ? "fewer than two snapshots in the window"
        : thin ? `${biggest.label} changed by ${signedBytes(biggest.delta ?? 0)}, too few points to judge a trend (${grown!.reason})`
        : "no rooted pool group, shm zone or the Lua heap keeps growing, and without two deep scans in the window the unrooted pools (where leaked pools live) are unknown";
      if (noDeep && verdict === "stable") finding += `; unrooted pools not judged (${this.deep.length} deep scan${this.deep.length === 1 ? "" : "s"} in the window)`;
      if (verdict === "stable") ruled.push("every pool group, shm zone and the Lua heap: none keeps growing beyond the noise rules");
      return { id: "owner", title, verdict, finding: finding + ".", facts, ruled_out: ruled };
    }
    const sig = this.sigOf(subj.metric);
    const info = sig !== undefined ? this.owners[sig] : undefined;
    const label = info ? `unrooted pools held by ${info.owner}` : rowLabel(subj.metric.replace(/\.(bytes|used_bytes)$/, ""), this.owners);
    for (const f of facts) if (f.label === label || (sig !== undefined && f.label === rowLabel(`pool.unrooted.${sig}`, this.owners))) f.key = true;
    let finding = `${label}: ${this.growth(subj.judged)}`;
    const lc = luaCount(subj.metric);
    const pools = sig !== undefined ? this.countNote(`pool.unrooted.${sig}.pools`, "pools")
      : subj.metric.startsWith("pool.") ? this.countNote(subj.metric.replace(/\.bytes$/, ".pools"), "pools")
      : lc ? this.countNote(lc.count, lc.noun) : undefined;
    if (pools) finding += `, ${pools}`;
    if (info) {
      finding += `; owner ${info.owner}`;
      if (info.retainer) finding += `, retained through ${info.retainer}`;
      if (info.create_size !== undefined) finding += `; pools created with size ${info.create_size}`;
      finding += `, cleanups: ${info.cleanups.length ? info.cleanups.join(", ") : "none"}`;
      const kin = this.kin(sig!, info);
      if (kin.length) {
        const n = kin.reduce((a, k) => a + k.pools, 0), bytes = kin.reduce((a, k) => a + k.bytes, 0);
        finding += `; the same kind of pool (same create size and creation path) also grew in ${kin.length} group${kin.length === 1 ? "" : "s"} held by ${[...new Set(kin.map((k) => k.owner))].join(", ")}: ${signedCount(n)} pools (${signedBytes(bytes)})`;
        facts.push({ label: "same kind of pool, other holders", delta: bytes, unit: "bytes", note: `${signedCount(n)} pools in ${kin.length} group${kin.length === 1 ? "" : "s"}` });
      }
      facts.unshift({ label: "owner", note: info.owner }, { label: "retainer path", note: info.retainer || "–" });
    } else if (luaTablePath(subj.metric) !== undefined) finding += "; a Lua table, in the LuaJIT heap, reached through that path from the registry";
    else if (subj.suspect) finding += `; owner ${subj.suspect.owner}`;
    const gist = `${label} ${signedBytes(subj.judged.delta ?? 0)}${pools ? ` (${pools.replace(/ \(.*\)$/, "")})` : ""}`;
    return {
      id: "owner", title, verdict: "grew", finding: finding + ".", gist, facts, ruled_out: ruled,
      chart: { kind: "lines", title: label, unit: "bytes", series: [this.chartLine(label, seriesOf(this.w, subj.metric))] },
    };
  }

  /**
   * Other unrooted groups of the same kind of pool that grew: the same create size and creation
   * path, held elsewhere (the agent groups pools by holder, so one leak can span several groups)
   */
  private kin(sig: string, info: UnrootedInfo): { owner: string; pools: number; bytes: number }[] {
    if (!info.created_at || info.create_size === undefined) return [];
    const path = info.created_at.join(" ");
    const out: { owner: string; pools: number; bytes: number }[] = [];
    for (const other in this.owners) {
      const o = this.owners[other];
      if (other === sig || o.create_size !== info.create_size || !o.created_at || o.created_at.join(" ") !== path) continue;
      const pools = seriesOf(this.w, `pool.unrooted.${other}.pools`), bytes = seriesOf(this.w, `pool.unrooted.${other}.bytes`);
      const dp = pools.length >= 2 ? pools[pools.length - 1].v - pools[0].v : 0;
      if (dp > 0) out.push({ owner: o.owner, pools: dp, bytes: bytes.length >= 2 ? bytes[bytes.length - 1].v - bytes[0].v : 0 });
    }
    return out;
  }

  /** the byte metric behind an owner-step row, by its label */
  private readonly rowMetric = new Map<string, string>();
  private metricOfRow(label: string): string {
    return this.rowMetric.get(label) ?? label;
  }

  private rssGrew(): boolean {
    return this.judge("system.rss_bytes").verdict === "grew";
  }

  evidence(): Step {
    const title = "Evidence: heap chunks by size class, window start vs now";
    if (this.deep.length < 2) {
      return {
        id: "evidence", title, verdict: "not enough data", ruled_out: [], facts: [],
        finding: `${this.deep.length} deep scan${this.deep.length === 1 ? "" : "s"} in the window: the size-class histogram needs two (one near each end).`,
      };
    }
    const a = this.deep[0], b = this.deep[this.deep.length - 1];
    const rows = diffStates(this.state(a), this.state(b)).filter((r) => r.section === "size_class");
    const moved = rows.filter((r) => (r.delta_count ?? 0) !== 0 || r.delta_bytes !== 0);
    const facts: Fact[] = moved.slice(0, 8).map((r) => {
      const min = r.key.slice("size_class.".length);
      const ia = a.metrics[`size_class.${min}.in_use_chunks`] ?? 0, ib = b.metrics[`size_class.${min}.in_use_chunks`] ?? 0;
      return { label: r.label, start: r.a_bytes, now: r.b_bytes, delta: r.delta_bytes, unit: "bytes", note: `${r.a_count!.toLocaleString("en-US")} → ${r.b_count!.toLocaleString("en-US")} chunks (${signedCount(r.delta_count!)}), in use ${signedCount(ib - ia)}` };
    });
    const top = moved[0];
    const all = rows.slice().sort((x, y) => Number(x.key.slice(11)) - Number(y.key.slice(11))).filter((r) => (r.a_count ?? 0) + (r.b_count ?? 0) > 0);
    const chart: Chart = { kind: "bars", title: "chunks per size class", unit: "count", labels: all.map((r) => fmtRange(Number(r.key.slice(11)), classMax(Number(r.key.slice(11))))), start: all.map((r) => r.a_count ?? 0), now: all.map((r) => r.b_count ?? 0) };
    const j = top ? this.judge(`${top.key}.bytes`) : undefined;
    if (!top || !j || j.verdict !== "grew") {
      const verdict: Verdict = j?.verdict === "not enough data" && top && top.delta_bytes >= this.rules.min_growth ? "not enough data" : "stable";
      const finding = top
        ? `${verdict === "stable" ? "no size class keeps growing" : "not enough deep scans to judge the trend"}; largest change ${top.label} ${signedCount(top.delta_count ?? 0)} chunks (${signedBytes(top.delta_bytes)})${j?.reason ? ` (${j.reason})` : ""}`
        : "no size class changed";
      return { id: "evidence", title, verdict, finding: finding + ".", facts, ruled_out: [], chart };
    }
    if (facts[0]) facts[0].key = true;
    const min = top.key.slice(11);
    const ia = a.metrics[`size_class.${min}.in_use_chunks`] ?? 0, ib = b.metrics[`size_class.${min}.in_use_chunks`] ?? 0;
    let finding = `${top.label}: ${(top.b_count ?? 0).toLocaleString("en-US")} chunks now, ${signedCount(top.delta_count ?? 0)} since the window's start (${signedBytes(top.delta_bytes)}, ${signedCount(ib - ia)} in use) — long-lived blocks accumulating`;
    const subj = this.subject();
    const sig = subj ? this.sigOf(subj.metric) : undefined;
    if (sig !== undefined) {
      const la = a.metrics[`pool.unrooted.${sig}.large_blocks`] ?? 0, lb = b.metrics[`pool.unrooted.${sig}.large_blocks`] ?? 0;
      if (lb !== la) finding += `; the growing pool group's large blocks ${signedCount(lb - la)}`;
    }
    const gist = `${top.label} ${signedCount(top.delta_count ?? 0)} (${signedBytes(top.delta_bytes)})`;
    return { id: "evidence", title, verdict: "grew", finding: finding + ".", gist, facts, ruled_out: [], chart };
  }

  code(): Step {
    const title = "Code path: where the growing memory was allocated";
    const subj = this.subject();
    const luaPath = subj ? luaTablePath(subj.metric) : undefined;
    if (luaPath !== undefined) {
      // Lua objects come from LuaJIT's own allocator: no C call path (and no malloc the sampler sees) made them
      return {
        id: "code", title, verdict: "not enough data", facts: [], ruled_out: [],
        finding: `The growth is Lua objects in ${luaPath}, allocated by LuaJIT's own allocator: no C creation path applies and the allocation sampler (malloc) does not see them. The code to find is the Lua code that stores into ${luaPath} and never removes the entries.`,
      };
    }
    const sig = subj ? this.sigOf(subj.metric) : undefined;
    const created = sig !== undefined ? this.owners[sig]?.created_at : undefined;
    const facts: Fact[] = [];
    const cp = this.input.callpaths;
    let chart: Chart | undefined;
    let top: { frames: string[]; fn: string; bytes: number; delta?: number; count: number } | undefined;
    if (cp?.last) {
      const leaf = (labels: string[]) => labels.join(" ← ");
      if (cp.first && cp.first.id !== cp.last.id) {
        const d = diffCallpaths(cp.first, cp.last);
        const r = d.rows[0];
        if (r) top = { frames: r.frames.map((f) => f.label), fn: r.fn, bytes: r.b_bytes, delta: r.delta_bytes, count: r.delta_count };
        for (const x of d.rows.slice(0, 5)) facts.push({ label: leaf([x.fn, ...x.frames.slice(0, 6).map((f) => f.label)]), start: x.a_bytes, now: x.b_bytes, delta: x.delta_bytes, unit: "bytes", note: `${signedCount(x.delta_count)} allocations` });
      } else {
        const p = cp.last.paths[0];
        if (p) top = { frames: p.frames.map((f) => f.label), fn: p.fn, bytes: p.est_bytes, count: p.est_count };
        for (const x of cp.last.paths.slice(0, 5)) facts.push({ label: leaf([x.fn, ...x.frames.slice(0, 6).map((f) => f.label)]), now: x.est_bytes, unit: "bytes", note: `${x.est_count.toLocaleString("en-US")} allocations outstanding since arming` });
      }
      const items = cp.last.paths.filter((p) => p.est_bytes > 0).map((p) => ({ stack: p.folded.split(";"), value: p.est_bytes }));
      if (items.length) chart = { kind: "flame", title: "outstanding sampled bytes by call path (root on top)", items };
    }
    if (created) facts.unshift({ label: "creation path of the growing pool group", note: created.join(" ← ") });
    const grownPath = top && (top.delta ?? top.bytes) >= this.rules.min_growth;
    const parts: string[] = [];
    if (created) parts.push(`the growing pool group was created at ${created.slice(0, 6).join(" ← ")}`);
    if (top && grownPath) parts.push(`the largest ${top.delta !== undefined ? "growth" : "outstanding memory"} by call path is ${top.delta !== undefined ? signedBytes(top.delta) : fmtBytes(top.bytes)} (${top.count.toLocaleString("en-US")} allocations${top.delta === undefined ? " since the sampler was armed" : " between two fetches"}) at ${[top.fn, ...top.frames.slice(0, 7)].join(" ← ")}`);
    let verdict: Verdict;
    if (created || grownPath) verdict = "grew";
    else if (top) {
      verdict = "stable";
      parts.push(`no sampled call path holds ${fmtBytes(this.rules.min_growth)} or more (largest ${fmtBytes(top.delta ?? top.bytes)})`);
    } else {
      verdict = "not enough data";
      parts.push(cp?.last ? "the sampler holds no outstanding allocation" : `no call paths for this worker in the window${this.input.callpaths_error ? ` (${this.input.callpaths_error})` : ""}: the sampler records allocations from when it is armed`);
    }
    const s = parts.join("; ");
    const gist = created ? `created at ${created.slice(0, 4).join(" ← ")}` : top && grownPath ? `allocated at ${[top.fn, ...top.frames.slice(0, 5)].join(" ← ")}` : undefined;
    return { id: "code", title, verdict, finding: s.charAt(0).toUpperCase() + s.slice(1) + ".", gist, facts, ruled_out: [], chart };
  }

  /** the commands a reader runs next, from what the steps could not show */
  next(steps: Step[]): string[] {
    const by = (id: string) => steps.find((s) => s.id === id)!;
    const out: string[] = [];
    const { memdiag_url: mu, control_plane_url: cu } = this.input.reach;
    const key = this.input.worker.key;
    const cmd = (command: string) => cu
      ? `curl -s -X POST '${cu}/api/workers/${encodeURIComponent(key)}/command' -H 'content-type: application/json' -d '{"command":"${command}"}'`
      : `curl -s '${mu ?? "http://127.0.0.1:9145"}/_memdiag?${command === "deep" ? "deep=1" : "sampler=arm"}'`;
    const anyGrowth = steps.some((s) => s.verdict === "grew");
    const subj = this.subject();
    const luaPath = subj ? luaTablePath(subj.metric) : undefined;
    if (by("system").verdict === "not enough data") out.push(`Widen the window or wait: RSS needs at least ${this.rules.min_points} snapshots over half the window after the worker's ${this.rules.warmup_s} s warm-up.`);
    if (this.deep.length < 2 && anyGrowth && luaPath === undefined) out.push(`Run deep scans at both ends of a window (agent option deep_interval_s, or now: ${cmd("deep")}) so the unrooted pools and the size classes can be compared.`);
    if (by("code").verdict === "not enough data" && anyGrowth && luaPath === undefined) {
      const owner = this.subject();
      const j = owner?.judged;
      const rate = j?.trend?.slope_per_min ?? (j?.delta && j.span > 0 ? (j.delta / j.span) * 60 : undefined);
      const wait = rate && rate > 0 ? Math.max(300, Math.ceil((4 * this.rules.min_growth) / rate) * 60) : 600;
      out.push(`Arm the allocation sampler (${cmd("sampler_arm")}), let the worker run ${fmtDuration(wait)} (${rate ? `at ${fmtBytes(rate)}/min that is ${fmtBytes((rate * wait) / 60)} of growth` : "enough for the growth to repeat"}), then report again: the code path step reads the sampler's call paths${cu ? " (or GET /api/workers/<key>/callpaths)" : ""}.`);
    }
    const owner = by("owner");
    if (owner.verdict === "grew") {
      const o = this.subject();
      const sig = o ? this.sigOf(o.metric) : undefined;
      const info = sig !== undefined ? this.owners[sig] : undefined;
      if (info) out.push(`Look at ${info.owner}: the pools it holds (${info.retainer || "retainer unknown"}) keep accumulating; ${by("code").verdict === "grew" ? "the code path step names where they are created" : "arm the sampler to see where they are created"}; then find where they should be destroyed.`);
      else if (luaPath !== undefined) out.push(`Find the Lua code that inserts into ${luaPath} (search the Lua sources for the table's name and what writes into it): its entries are added and never removed, so the cache needs a bound or an expiry. To follow the table live: ${mu ? `curl -s '${mu}/_memdiag?lua=census'` : "curl -s 'http://127.0.0.1:9145/_memdiag?lua=census'"} on the worker lists its keys and bytes.`);
      else out.push(`Look at what fills ${owner.finding.split(":")[0]}.`);
    }
    if (!anyGrowth && by("system").verdict === "stable") out.push("Nothing to do for memory on this worker in this window; report over a longer window if the growth is slow.");
    return out;
  }

  build(): Report {
    const steps = [this.system(), this.allocator(), this.owner(), this.evidence(), this.code()];
    const grew = steps.filter((s) => s.verdict === "grew");
    const sys = steps[0];
    const verdict: Report["verdict"] = grew.length ? "growth" : sys.verdict === "not enough data" ? "not enough data" : "no sustained growth";
    const who = `Worker ${this.input.worker.pid} (${this.input.worker.instance})`;
    const span = fmtDuration(this.input.window.seconds);
    let summary: string;
    if (verdict === "growth") {
      summary = `${who}, ${span} window: ${grew.map((s) => s.gist ?? s.finding.replace(/\.$/, "")).join("; ")}.`;
    } else if (verdict === "no sustained growth") {
      const rss = sys.facts[0];
      summary = `${who}, ${span} window: no sustained growth — RSS ${fmtBytes(rss.start ?? 0)} → ${fmtBytes(rss.now ?? 0)} (${signedBytes(rss.delta ?? 0)}), and no allocator, pool, shm or Lua series keeps growing.`;
    } else summary = `${who}, ${span} window: not enough data to judge (${this.input.snapshots.length} snapshots, ${this.deep.length} deep).`;
    return {
      version: REPORT_VERSION,
      generated_at: this.input.generated_at,
      mode: this.input.mode,
      worker: this.input.worker,
      window: this.input.window,
      basis: this.twoPoint ? "two snapshots" : "trend",
      snapshots: this.input.snapshots.length,
      deep_snapshots: this.deep.length,
      verdict,
      summary,
      steps,
      next: this.next(steps),
      ...(this.input.others ? { others: this.input.others } : {}),
    };
  }
}

export function buildReport(input: ReportInput): Report {
  return new ReportBuilder(input).build();
}
