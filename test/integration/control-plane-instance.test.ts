/**
 * A whole nginx instance over time (issue 4: "Diff of any two snapshots of a worker (or of
 * a whole instance, summed over workers)"): GET /api/series?instance= and
 * GET /api/diff?instance=&from=&to= against a real control plane (real websockets, real
 * SQLite), fed by simulated agents through a reload: two workers, then two new ones of
 * the same instance that overlap the old ones for a few seconds (graceful shutdown), the
 * old ones going away. Ground truth: sums the test computes from the snapshots it sent.
 */
import { startCP, RunningCP, getJson } from "../harness/control-plane";
import { SimAgent, simSnapshot, LEAK_SIGNATURE } from "../harness/sim-agent";

const INSTANCE = "gw:7:/etc/nginx/";
const T = Math.floor(Date.now() / 1000) - 3600;

interface Sent {
  key: string;
  time: number;
  deep: boolean;
  rss: number;
  pools?: number;
}

describe("per-instance series and diff across a reload", () => {
  let cp: RunningCP;
  const sent: Sent[] = [];
  const life = new Map<string, { first: number; last: number; gone: boolean }>();
  const enc = encodeURIComponent;

  /** a worker sending snapshots at `times`, leaking one pool every snapshot from `leak0` on */
  async function run(a: SimAgent, times: number[], leak0: number, worker_start: number): Promise<void> {
    let seq = 0;
    for (const time of times) {
      seq++;
      const deep = seq % 3 === 1;
      const snap = simSnapshot({ pid: a.identity.pid, instance: a.identity.instance, worker_id: a.identity.worker_id ?? 0, worker_start, seq, time, leaked: leak0 + seq, deep, jitter: (seq * 7919) % 50000 });
      await a.send(snap);
      const u = deep ? ((snap.pools as any).unrooted as any[]).find((g) => g.signature === LEAK_SIGNATURE) : undefined;
      sent.push({ key: a.key, time, deep, rss: (snap.system as any).rss_bytes, pools: u?.pools });
    }
    life.set(a.key, { first: times[0], last: times[times.length - 1], gone: false });
  }

  beforeAll(async () => {
    cp = await startCP();
    const mk = (pid: number, worker_id: number, worker_start: number, instance = INSTANCE) =>
      new SimAgent(`${cp.ws}/ingest`, { host: "gw", instance, pid, worker_id, worker_start, generation: 1, nginx_version: "1.22.1", agent_version: "0.1.0" });
    // generation 1: two workers, snapshots every 10 s, interleaved (offsets 0 and 3 s)
    const a = mk(101, 0, T - 5), b = mk(102, 1, T - 5);
    const other = mk(999, 0, T - 5, "elsewhere:1:/x/");
    await Promise.all([a.connect(), b.connect(), other.connect()]);
    await run(a, Array.from({ length: 11 }, (_, i) => T + i * 10), 0, T - 5); // T … T+100
    await run(b, Array.from({ length: 11 }, (_, i) => T + 3 + i * 10), 50, T - 5); // T+3 … T+103
    await run(other, Array.from({ length: 20 }, (_, i) => T + i * 10), 500, T - 5);
    // reload: the new workers start at T+96 and T+99, while the old ones finish their last snapshots
    const c = mk(201, 0, T + 95), d = mk(202, 1, T + 95);
    await Promise.all([c.connect(), d.connect()]);
    await run(c, Array.from({ length: 11 }, (_, i) => T + 96 + i * 10), 1000, T + 95); // T+96 … T+196
    await run(d, Array.from({ length: 11 }, (_, i) => T + 99 + i * 10), 2000, T + 95); // T+99 … T+199
    // the old ones go away
    await a.close();
    await b.close();
    life.get(a.key)!.gone = true;
    life.get(b.key)!.gone = true;
    for (let i = 0; i < 100; i++) {
      const ws = (await getJson(`${cp.base}/api/workers?instance=${enc(INSTANCE)}&state=gone`)).body as any[];
      if (ws.length === 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    await cp?.stop();
  });

  /** ground truth: at each time a worker of the instance reported the metric, the sum over the workers running then of each one's latest value */
  function expected(value: (s: Sent) => number | undefined, from = -Infinity, to = Infinity): [number, number][] {
    const mine = sent.filter((s) => life.has(s.key) && s.key.startsWith(INSTANCE + "/"));
    const times = [...new Set(mine.filter((s) => value(s) !== undefined).map((s) => s.time))].filter((t) => t >= from && t <= to).sort((x, y) => x - y);
    return times.map((t) => {
      let sum = 0;
      for (const [key, l] of life) {
        if (!key.startsWith(INSTANCE + "/")) continue;
        if (t < l.first || (l.gone && t > l.last)) continue;
        const latest = mine.filter((s) => s.key === key && s.time <= t && value(s) !== undefined).pop();
        if (latest) sum += value(latest)!;
      }
      return [t, sum];
    });
  }

  test("RSS of the instance: summed over its running workers at every time, across the reload", async () => {
    const r = await getJson(`${cp.base}/api/series?instance=${enc(INSTANCE)}&metric=system.rss_bytes`);
    expect(r.status).toBe(200);
    const want = expected((s) => s.rss);
    expect(want.length).toBe(44); // every snapshot time of the four workers (all distinct)
    expect(r.body.points).toEqual(want);
    expect(r.body.workers).toHaveLength(4);
    expect(r.body).toMatchObject({ instance: INSTANCE, metric: "system.rss_bytes" });
    // spot checks by hand: before the reload two workers, during it four, after it two new ones
    const at = (t: number) => r.body.points.find((p: number[]) => p[0] === t)[1];
    const v = (key: number, t: number) => sent.filter((s) => s.key.includes(`/${key}/`) && s.time <= t).pop()!.rss;
    expect(at(T + 50)).toBe(v(101, T + 50) + v(102, T + 50));
    expect(at(T + 100)).toBe(v(101, T + 100) + v(102, T + 100) + v(201, T + 100) + v(202, T + 100));
    expect(at(T + 106)).toBe(v(201, T + 106) + v(202, T + 106)); // the old ones are gone after their last snapshots
  });

  test("a deep-scan metric carries each worker's latest deep value forward; from/to and limit", async () => {
    const metric = `pool.unrooted.${LEAK_SIGNATURE}.pools`;
    const r = await getJson(`${cp.base}/api/series?instance=${enc(INSTANCE)}&metric=${enc(metric)}&from=${T + 20}&to=${T + 150}`);
    expect(r.status).toBe(200);
    // inside [from, to]: values carried in from before `from` count too
    const want = expected((s) => s.pools);
    const inRange = want.filter(([t]) => t >= T + 20 && t <= T + 150);
    expect(r.body.points).toEqual(inRange);
    expect(inRange.length).toBeGreaterThan(5);
    const lim = await getJson(`${cp.base}/api/series?instance=${enc(INSTANCE)}&metric=system.rss_bytes&limit=5`);
    expect(lim.body.points).toEqual(expected((s) => s.rss).slice(0, 5));
  });

  test("diff of the instance between two times: the workers running at each, summed", async () => {
    const from = T + 55, to = T + 180;
    const r = await getJson(`${cp.base}/api/diff?instance=${enc(INSTANCE)}&from=${from}&to=${to}`);
    expect(r.status).toBe(200);
    const rss = expected((s) => s.rss);
    const at = (t: number) => rss.filter(([x]) => x <= t).pop()![1];
    const row = r.body.rows.find((x: any) => x.key === "system.rss_bytes");
    expect(row).toMatchObject({ a_bytes: at(from), b_bytes: at(to), delta_bytes: at(to) - at(from) });
    // the leaking group: each side's latest deep snapshot per worker, counts summed
    const pools = expected((s) => s.pools);
    const p = (t: number) => pools.filter(([x]) => x <= t).pop()![1];
    const g = r.body.rows.find((x: any) => x.key === `pool.unrooted.${LEAK_SIGNATURE}`);
    expect(g).toMatchObject({ a_count: p(from), b_count: p(to), delta_count: p(to) - p(from) });
  });

  test("errors: unknown instance 404, worker and instance together 400", async () => {
    expect((await getJson(`${cp.base}/api/series?instance=nope&metric=system.rss_bytes`)).status).toBe(404);
    expect((await getJson(`${cp.base}/api/series?instance=${enc(INSTANCE)}&worker=x&metric=system.rss_bytes`)).status).toBe(400);
    expect((await getJson(`${cp.base}/api/series?instance=${enc(INSTANCE)}`)).status).toBe(400);
  });
});
