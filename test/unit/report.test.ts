/**
 * The report model on synthetic histories (test/fixtures/snapshots.ts: every number
 * given lands in exactly one field, so the truth is the test's own inputs): a worker
 * leaking pools of one module, a clean worker, a young worker, a two-snapshot (live)
 * report; and the renderers on those models.
 */
import { buildReport, ReportInput } from "../../control-plane/src/report/build";
import { renderHtml, renderMarkdown, renderText } from "../../control-plane/src/report/render";
import { Report } from "../../control-plane/src/report/model";
import { summarize } from "../../control-plane/src/summary";
import { buildSnapshot, defaultSizeClasses } from "../fixtures/snapshots";
import { fmtBytes } from "../../control-plane/src/format";
import type { Callpaths } from "../../control-plane/src/protocol";

const MB = 1 << 20;
const START = 1_764_200_000;
const OWNER = "ngx_http_dyups_module.so (.bss+0x80)";
const KIN_OWNER = "cycle pool";
const TABLE = 300 * 1024;
const POOL = 16384;
const CLASS = 262144;

interface Spec {
  /** leaked pools per 15 s step */
  leak: number;
  steps: number;
  created_at?: string[];
  age_s?: number;
  /** pools per step of the same kind (create size, creation path) held by another owner */
  kin?: number;
}

/** a snapshot every 15 s, every other one deep; `leak` pools (16 KB block + one 300 KB table each) per step */
function history(spec: Spec): { input: ReportInput; pools: (i: number) => number } {
  const worker_start = START - (spec.age_s ?? 3600);
  const pools = (i: number) => 1 + i * spec.leak;
  const snaps: ReportInput["snapshots"] = [];
  for (let i = 0; i <= spec.steps; i++) {
    const n = pools(i);
    const held = n * (POOL + TABLE);
    const sc = defaultSizeClasses().map((c) => (c.min_bytes === CLASS ? { ...c, chunks: c.chunks + n, bytes: c.bytes + n * TABLE } : c));
    const s = buildSnapshot({
      seq: i + 1, time: START + i * 15, worker_start, deep: i % 2 === 0,
      rss_bytes: 80 * MB + held, glibc_heap_bytes: 30 * MB + held, glibc_in_use_bytes: 26 * MB + held,
      unrooted: [
        { signature: "s1", owner: OWNER, pools: n, block_bytes: n * POOL, large_blocks: n, large_bytes: n * TABLE, create_size: POOL, cleanups: [] },
        ...(spec.kin ? [{ signature: "s2", owner: KIN_OWNER, pools: i * spec.kin, block_bytes: i * spec.kin * POOL, large_blocks: 0, large_bytes: 0, create_size: POOL, cleanups: [] }] : []),
      ],
      size_classes: sc,
    });
    if (spec.created_at && i % 2 === 0) for (const u of (s.pools as any).unrooted) u.created_at = spec.created_at;
    if (s.scan) Object.assign(s.scan, { arena_heaps: 0, arena_bytes: 0 });
    const m = summarize(s);
    snaps.push({ time: START + i * 15, deep: m.deep, metrics: m.metrics, unrooted: m.unrooted });
  }
  return {
    pools,
    input: {
      mode: "history", generated_at: START + spec.steps * 15 + 1,
      worker: { key: "gw/4243/1", instance: "gw", pid: 4243, worker_start },
      window: { from: START, to: START + spec.steps * 15, seconds: spec.steps * 15 },
      snapshots: snaps, reach: { control_plane_url: "http://127.0.0.1:9146" },
    },
  };
}

const step = (r: Report, id: string) => r.steps.find((s) => s.id === id)!;

describe("report on a worker leaking pools of one module", () => {
  const N = 40; // steps: 10 min
  const { input, pools } = history({ leak: 2, steps: N, created_at: ["ngx_memalign+0x20", "ngx_create_pool+0x1a", "ngx_dyups_update+0x55"] });
  const r = buildReport(input);
  const leaked = pools(N) - pools(0);

  test("every step names its layer with the figures of the history", () => {
    expect(r.verdict).toBe("growth");
    expect(r.basis).toBe("trend");
    const sys = step(r, "system");
    expect(sys.verdict).toBe("grew");
    const rss = sys.facts.find((f) => f.label === "RSS")!;
    expect(rss.delta).toBe(leaked * (POOL + TABLE));
    expect(sys.finding).toContain(`glibc heap (brk heap, arenas, mmapped chunks) carries 100% of the growth`);
    // shm zones, files, code and stacks did not move
    expect(sys.ruled_out.map((x) => x.split(":")[0])).toEqual(expect.arrayContaining(["shared memory zones", "code", "stacks"]));

    const alloc = step(r, "allocator");
    expect(alloc.verdict).toBe("grew");
    expect(alloc.facts[0].delta).toBe(leaked * (POOL + TABLE));
    expect(alloc.finding).toMatch(/real growth of live allocations, not fragmentation/);
    expect(alloc.ruled_out).toContain("glibc thread arenas: none (every allocation is in the main arena or mmapped)");

    const owner = step(r, "owner");
    expect(owner.verdict).toBe("grew");
    expect(owner.finding).toContain(`unrooted pools held by ${OWNER}`);
    expect(owner.finding).toContain(`${pools(0)} → ${pools(N)} pools (+${leaked})`);
    expect(owner.finding).toContain(`pools created with size ${POOL}`);
    const g = owner.facts.find((f) => f.key)!;
    expect(g.delta).toBe(leaked * (POOL + TABLE));

    const ev = step(r, "evidence");
    expect(ev.verdict).toBe("grew");
    expect(ev.finding).toContain(`256–512 KB chunks: `);
    expect(ev.finding).toContain(`+${leaked} since the window's start`);
    expect(ev.finding).toContain(`large blocks +${leaked}`);
    expect(ev.chart!.kind).toBe("bars");

    const code = step(r, "code");
    expect(code.verdict).toBe("grew");
    expect(code.finding).toContain("ngx_memalign+0x20 ← ngx_create_pool+0x1a ← ngx_dyups_update+0x55");
    expect(r.summary).toMatch(/^Worker 4243 \(gw\), 10 min window: /);
    expect(r.next.join(" ")).toContain(OWNER);
  });

  test("without call paths or creation path the code step says how to arm the sampler and when to look again", () => {
    const bare = buildReport(history({ leak: 2, steps: N }).input);
    const code = step(bare, "code");
    expect(code.verdict).toBe("not enough data");
    const arm = bare.next.find((n) => n.includes("sampler_arm"))!;
    expect(arm).toContain(`curl -s -X POST 'http://127.0.0.1:9146/api/workers/gw%2F4243%2F1/command'`);
    // 2 pools of 316 KB per 15 s: 4 MB of growth take under 5 min, the floor applies
    const perMin = 4 * 2 * (POOL + TABLE);
    expect(arm).toContain(`let the worker run 5 min (at ${fmtBytes(perMin)}/min that is ${fmtBytes(5 * perMin)} of growth)`);
  });

  test("stored call paths: the growth between two fetches names the path", () => {
    const frames = (labels: string[]) => labels.map((label) => ({ pc: null, module: null, offset: null, build_id: null, label }));
    const path = (bytes: number, count: number) => ({ key: "k1", fn: "malloc", est_bytes: bytes, est_count: count, records: count, record_bytes: bytes, frames: frames(["ngx_alloc+0x1", "ngx_palloc_large+0x2", "ngx_dyups_build+0x3"]), folded: "ngx_dyups_build+0x3;ngx_palloc_large+0x2;ngx_alloc+0x1;malloc" });
    const cp = (id: number, n: number): Callpaths => ({ id, worker: "gw/4243/1", time: START + id, pid: 4243, paths_total: 1, est_bytes_total: n * TABLE, sampler: {}, paths: [path(n * TABLE, n)] });
    const h = history({ leak: 2, steps: N }).input;
    const withCp = buildReport({ ...h, callpaths: { first: cp(1, 10), last: cp(2, 50) } });
    const code = step(withCp, "code");
    expect(code.verdict).toBe("grew");
    expect(code.finding).toContain(`${"+" + fmtBytes(40 * TABLE)} (40 allocations between two fetches) at malloc ← ngx_alloc+0x1 ← ngx_palloc_large+0x2 ← ngx_dyups_build+0x3`);
    expect(code.chart).toMatchObject({ kind: "flame", items: [{ value: 50 * TABLE }] });
  });
});

describe("report on a clean worker", () => {
  const r = buildReport(history({ leak: 0, steps: 40 }).input);
  test("no step claims growth; the verdict is no sustained growth with figures", () => {
    for (const s of r.steps) expect(s.verdict).not.toBe("grew");
    expect(r.verdict).toBe("no sustained growth");
    expect(r.summary).toContain(`RSS ${fmtBytes(80 * MB + POOL + TABLE)} → ${fmtBytes(80 * MB + POOL + TABLE)} (0 B)`);
    expect(step(r, "system").verdict).toBe("stable");
    expect(step(r, "owner").verdict).toBe("stable");
    expect(step(r, "evidence").finding).toMatch(/^no size class changed\.$/);
    expect(r.next).toEqual(["Nothing to do for memory on this worker in this window; report over a longer window if the growth is slow."]);
  });
});

describe("report on a worker too young to judge", () => {
  test("its warm-up leaves too few points: not enough data, never growth", () => {
    const h = history({ leak: 2, steps: 5, age_s: 30 }).input;
    const r = buildReport(h);
    expect(step(r, "system").verdict).toBe("not enough data");
    expect(step(r, "system").finding).toMatch(/not enough data to judge its growth \(too few points/);
    expect(r.next[0]).toMatch(/^Widen the window or wait/);
  });
});

describe("report over a window the history covers too little of", () => {
  test("growth seen over a quarter of the window is not enough data, never stable", () => {
    const h = history({ leak: 2, steps: 10 }).input;
    const r = buildReport({ ...h, window: { ...h.window, seconds: 4 * h.window.seconds } });
    for (const id of ["system", "allocator", "owner", "evidence"]) expect(`${id}: ${step(r, id).verdict}`).toBe(`${id}: not enough data`);
    expect(step(r, "owner").finding).toMatch(/^unrooted pools held by .* changed by \+[\d.]+ MB, too few points to judge a trend \(covers too little of the window/);
    expect(r.verdict).toBe("not enough data");
  });
});

describe("report on two deep snapshots (live mode)", () => {
  test("growth is the difference of the two, judged against the same minimum", () => {
    const h = history({ leak: 5, steps: 4 }).input;
    const two = { ...h, mode: "live" as const, snapshots: [h.snapshots[0], h.snapshots[4]] };
    const r = buildReport(two);
    expect(r.basis).toBe("two snapshots");
    expect(step(r, "owner").verdict).toBe("grew");
    expect(step(r, "owner").finding).toContain("1 → 21 pools (+20)");
    expect(step(r, "evidence").finding).toContain("+20 since the window's start");
    const clean = history({ leak: 0, steps: 4 }).input;
    const rc = buildReport({ ...clean, mode: "live", snapshots: [clean.snapshots[0], clean.snapshots[4]] });
    for (const s of rc.steps) expect(s.verdict).not.toBe("grew");
  });
});

describe("report on one kind of pool held by two owners", () => {
  test("the owner step names the larger group and adds up the other group of the same create size and creation path", () => {
    const N = 40;
    const path = ["ngx_memalign+0x20", "ngx_create_pool+0x1a", "ngx_dyups_do_update+0x15f"];
    const r = buildReport(history({ leak: 3, steps: N, created_at: path, kin: 1 }).input);
    const ow = step(r, "owner");
    expect(ow.verdict).toBe("grew");
    expect(ow.finding).toContain(`1 → ${1 + 3 * N} pools (+${3 * N})`);
    expect(ow.finding).toContain(`also grew in 1 group held by ${KIN_OWNER}: +${N} pools (+${fmtBytes(N * POOL)})`);
    expect(ow.facts.find((f) => f.label === "same kind of pool, other holders")).toMatchObject({ delta: N * POOL, note: `+${N} pools in 1 group` });
    // another creation path is another kind of pool: not added
    const h = history({ leak: 3, steps: N, created_at: path, kin: 1 }).input;
    for (const s of h.snapshots) if (s.unrooted.s2) s.unrooted = { ...s.unrooted, s2: { ...s.unrooted.s2, created_at: ["ngx_create_pool+0x1a", "elsewhere+0x1"] } };
    expect(step(buildReport(h), "owner").finding).not.toContain("also grew");
  });
});

describe("report on a Lua table that keeps growing while the GC total saws", () => {
  const PATH = 'package.loaded["app.cache"].by_key';
  const N = 40, KEYS = 300, PER_KEY = 2100;
  const worker_start = START - 3600;
  const snaps: ReportInput["snapshots"] = [];
  for (let i = 0; i <= N; i++) {
    const keys = 100 + i * KEYS;
    // the running total drops by most of what it gained at every other snapshot (a cycle): no trend
    const gc = 20 * MB + (i % 2 === 0 ? 40 * MB : 0) + (i * KEYS * PER_KEY) / 8;
    const s = buildSnapshot({ seq: i + 1, time: START + i * 15, worker_start, gc_bytes: gc });
    (s as any).lua = { census: { ok: true, time: START + i * 15 - 1, types: [{ type: "string", count: keys, bytes: keys * PER_KEY + (i % 2) * 30 * MB }], holders: { tables: [{ path: PATH, reached_bytes: 4096 + keys * PER_KEY, keys }] } } };
    const m = summarize(s);
    snaps.push({ time: START + i * 15, deep: m.deep, metrics: m.metrics, unrooted: m.unrooted });
  }
  const r = buildReport({
    mode: "history", generated_at: START + N * 15 + 1, worker: { key: "gw/4243/1", instance: "gw", pid: 4243, worker_start },
    window: { from: START, to: START + N * 15, seconds: N * 15 }, snapshots: snaps, reach: { control_plane_url: "http://127.0.0.1:9146" },
  });
  test("owner: the table path with its keys; allocator: LuaJIT grew; code: no C path claimed, no sampler to arm", () => {
    const ow = step(r, "owner");
    expect(ow.verdict).toBe("grew");
    expect(ow.finding.startsWith(`${PATH}: +${fmtBytes(N * KEYS * PER_KEY)} over 10 min`)).toBe(true);
    expect(ow.finding).toContain(`100 → ${(100 + N * KEYS).toLocaleString("en-US")} keys (+${(N * KEYS).toLocaleString("en-US")})`);
    const al = step(r, "allocator");
    expect(al.verdict).toBe("grew");
    expect(al.finding).toContain(`LuaJIT: the Lua objects reached through ${PATH} +${fmtBytes(N * KEYS * PER_KEY)}`);
    expect(al.finding).toMatch(/running total [^,]+, not a trend/);
    const code = step(r, "code");
    expect(code.verdict).toBe("not enough data");
    expect(code.finding).toContain(`no C creation path applies`);
    expect(r.next.join("\n")).not.toMatch(/sampler/);
    expect(r.next[0]).toContain(`Find the Lua code that inserts into ${PATH}`);
  });
});

describe("renderers", () => {
  const r = buildReport(history({ leak: 2, steps: 40, created_at: ["ngx_create_pool+0x1a"] }).input);
  test("text, Markdown and HTML carry every step's verdict and finding", () => {
    const text = renderText(r), md = renderMarkdown(r), html = renderHtml(r);
    for (const s of r.steps) {
      expect(text).toContain(s.title);
      expect(md).toContain(`${s.title} — ${s.verdict === "grew" ? "GREW" : s.verdict === "stable" ? "STABLE" : "NOT ENOUGH DATA"}`);
      expect(html).toContain(`id="step-${s.id}" data-verdict="${s.verdict}"`);
    }
    expect(text.split("\n").filter((l) => l.includes(OWNER)).length).toBeGreaterThan(0);
    // self-contained: no script, no external reference
    expect(html).not.toMatch(/<script|<link|src=|href="http/);
    expect((html.match(/<svg class="chart/g) ?? []).length).toBe(4);
  });
});
