/**
 * The LuaJIT heap judged on what survives a collection (control-plane/src/lua-floor.ts): a clean
 * worker whose heap saw-tooths with its collector is no suspect, whether the agent reports the
 * end-of-cycle floor or only the raw count; a Lua leak under the same saw-tooth is, on the floor.
 */
import { findSuspects, WorkerWindow } from "../../control-plane/src/suspects";
import { keepsGrowing, trend, DEFAULT_RULES } from "../../control-plane/src/trends";
import { summarize } from "../../control-plane/src/summary";
import { lowerEnvelope, ENVELOPE_S } from "../../control-plane/src/lua-floor";
import { buildSnapshot } from "../fixtures/snapshots";

const MB = 1 << 20;
const T0 = 1_764_150_000;

/**
 * A worker's Lua heap: `live(t)` survives, garbage piles up at `garbagePerS` and is swept at the
 * end of every `cycleS` cycle; snapshots every `stepS`. The floor is the heap at the latest cycle end.
 */
function worker(o: { live: (t: number) => number; garbagePerS: number; cycleS: number; stepS: number; spanS: number; floor: boolean; rss: number }): WorkerWindow {
  const snaps: WorkerWindow["snapshots"] = [];
  for (let t = 0; t <= o.spanS; t += o.stepS) {
    const sinceCycle = t % o.cycleS;
    const lastEnd = t - sinceCycle;
    const gc = Math.round(o.live(t) + o.garbagePerS * sinceCycle);
    const s = buildSnapshot({
      seq: t / o.stepS + 1, time: T0 + t, rss_bytes: o.rss + gc, gc_bytes: gc,
      gc_floor_bytes: o.floor ? Math.round(o.live(lastEnd)) : undefined,
    });
    const sum = summarize(s);
    snaps.push({ time: T0 + t, deep: false, metrics: sum.metrics, unrooted: {} });
  }
  return { worker: "w", instance: "i", worker_start: T0 - 3600, snapshots: snaps };
}

const series = (w: WorkerWindow, m: string) => w.snapshots.map((s) => ({ t: s.time, v: s.metrics[m] }));

describe("lowerEnvelope", () => {
  test("a steady rise keeps its slope (shifted by the span); points without a span of history are dropped", () => {
    const pts = Array.from({ length: 61 }, (_, i) => ({ t: i * 10, v: 1000 + 7 * i * 10 }));
    const env = lowerEnvelope(pts, 60);
    expect(env[0].t).toBe(60);
    expect(env.length).toBe(55);
    for (const p of env) expect(p.v).toBe(1000 + 7 * (p.t - 60));
    expect(trend(env).slope_per_min).toBeCloseTo(trend(pts).slope_per_min, 9);
  });

  test("a saw-tooth with cycles shorter than the span is its floor", () => {
    const pts = Array.from({ length: 100 }, (_, i) => ({ t: i * 5, v: 500 + ((i * 5) % 40) * 3 }));
    const env = lowerEnvelope(pts, 60);
    expect(new Set(env.map((p) => p.v))).toEqual(new Set([500]));
  });
});

describe("LuaJIT heap suspects judge what survives a collection", () => {
  // an idle worker: 3 MB live, 60 KB/s of request garbage, a cycle every 45 s; 15 MB RSS
  const clean = { live: () => 3 * MB, garbagePerS: 60 * 1024, cycleS: 45, stepS: 2, rss: 12 * MB };

  test("a clean worker is no suspect over a 30 s window that ends inside a climb between cycles", () => {
    // 0..44 s of one cycle: the raw count rises 2.6 MB, steadily
    const w = worker({ ...clean, spanS: 44, floor: true });
    const raw = series(w, "luajit.gc_bytes");
    // the raw series alone passes every growth rule: it is the collector's saw-tooth that misleads
    const rules = { ...DEFAULT_RULES, min_growth: Math.max(DEFAULT_RULES.min_growth, 0.1 * w.snapshots[0].metrics["system.rss_bytes"]) };
    expect(keepsGrowing(raw.slice(-16), 30, rules).ok).toBe(true);
    const last30 = { ...w, snapshots: w.snapshots.slice(-16) };
    expect(findSuspects([last30], 30).filter((s) => s.metric.startsWith("luajit."))).toEqual([]);
  });

  test("the same worker from an agent without the floor: no suspect either (lower envelope)", () => {
    const w = worker({ ...clean, spanS: 44, floor: false });
    const last30 = { ...w, snapshots: w.snapshots.slice(-16) };
    expect(findSuspects([last30], 30).filter((s) => s.metric.startsWith("luajit."))).toEqual([]);
    // over ten minutes of saw-tooth, none
    const long = worker({ ...clean, spanS: 600, floor: false });
    expect(findSuspects([long], 600).filter((s) => s.metric.startsWith("luajit."))).toEqual([]);
  });

  test("a Lua leak under the same saw-tooth is a suspect, judged on the floor, with its growth", () => {
    const perS = 2 * MB / 60; // 2 MB a minute kept
    const w = worker({ ...clean, live: (t) => 3 * MB + perS * t, spanS: 600, floor: true });
    const s = findSuspects([w], 600);
    const lua = s.filter((x) => x.metric.startsWith("luajit."));
    expect(lua.map((x) => x.metric)).toEqual(["luajit.gc_floor_bytes"]);
    expect(lua[0].owner).toBe("lua");
    // the floor moves once per 45 s cycle: the fit of that staircase is within 10 % of the leak's rate
    expect(Math.abs(lua[0].growth_bytes_per_min - 2 * MB) / (2 * MB)).toBeLessThan(0.1);
    expect(lua[0].evidence).toMatch(/^LuaJIT heap after collection: \+/);
  });

  test("the leak from an agent without the floor is found on the raw count's envelope", () => {
    const perS = 2 * MB / 60;
    const w = worker({ ...clean, live: (t) => 3 * MB + perS * t, spanS: 600, floor: false });
    const lua = findSuspects([w], 600).filter((x) => x.metric.startsWith("luajit."));
    expect(lua.map((x) => x.metric)).toEqual(["luajit.gc_bytes"]);
    expect(Math.abs(lua[0].growth_bytes_per_min - 2 * MB) / (2 * MB)).toBeLessThan(0.15);
  });

  test("envelope span is longer than an idle worker's cycle", () => {
    expect(ENVELOPE_S).toBeGreaterThan(clean.cycleS);
  });
});
