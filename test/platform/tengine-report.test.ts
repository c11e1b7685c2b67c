/**
 * The guided-analysis report on the reference case study, for real, on Tengine 3.1.0 with its
 * dynamic-upstream module (the scenario of tengine-dyups.test.ts): `memdiag report --url` takes
 * two deep snapshots of the worker and, between them, the test re-posts the upstream U times with
 * upstream keepalive, so every superseded version's pool stays alive. The sampler is armed before
 * the first snapshot. Ground truth: the U updates the test made, the ring size the hash balancer
 * allocates (150 servers x 160 points x 16 bytes), the pools' create size (512).
 */
import { Nginx } from "../harness/nginx";
import { startDyups } from "../harness/dyups";
import { PLATFORM } from "../harness/platform";
import { ensureSampler, samplerCall as sampler } from "../harness/fixtures";
import { DYUPS_POOL_SIZE, DYUPS_RING_BYTES, dyupsUpdate } from "../../scripts/demo/dyups";
import { LiveSource } from "../../control-plane/src/report/live";
import { buildReport } from "../../control-plane/src/report/build";
import type { Report, Step } from "../../control-plane/src/report/model";

const U = 40;
const onTengine = PLATFORM.name === "tengine";
if (!onTengine) console.log(`tengine-report: skipped on ${PLATFORM.name} (the dyups module is Tengine's; MEMDIAG_PLATFORM=tengine)`);

const step = (r: Report, id: string): Step => r.steps.find((s) => s.id === id)!;

(onTengine ? describe : describe.skip)("report on the Tengine dyups case: the pool group, its ring blocks, its creation path", () => {
  let ngx: Nginx;
  let backendPort = 0;
  let dyupsPort = 0;
  beforeAll(async () => {
    ensureSampler();
    ({ ngx, backendPort, dyupsPort } = await startDyups());
  });
  afterAll(() => ngx?.stop());

  test(`${U} updates between two deep snapshots: each step names the dyups versions' figures`, async () => {
    expect(await sampler(ngx, "arm")).toMatchObject({ armed: true });
    const pid = ngx.workerPids()[0];
    let updates = 0;
    const src = new LiveSource({
      url: `http://127.0.0.1:${ngx.memdiagPort}`,
      interval_s: 2,
      pid,
      sleep: async (ms) => {
        for (let i = 0; i < U; i++, updates++) await dyupsUpdate(dyupsPort, ngx.appPort, backendPort);
        await new Promise((res) => setTimeout(res, ms));
      },
    });
    const r = buildReport(await src.input());
    console.log(`tengine report: ${r.summary}\n${r.steps.map((s) => `${s.id} [${s.verdict}] ${s.finding}`).join("\n")}\nnext: ${r.next.join("\n")}`);
    expect(updates).toBe(U);
    expect(r).toMatchObject({ mode: "live", basis: "two snapshots", verdict: "growth", worker: { pid } });

    // 1. system: the growth is in the glibc heap, at least the U rings
    const sys = step(r, "system");
    expect(sys.verdict).toBe("grew");
    expect(sys.facts.find((f) => f.label === "RSS")!.delta!).toBeGreaterThan(0.9 * U * DYUPS_RING_BYTES);
    expect(sys.finding).toMatch(/; glibc heap \(brk heap, arenas, mmapped chunks\) carries \d+% of the growth/);

    // 2. allocator: live allocations of at least the U rings
    const al = step(r, "allocator");
    expect(al.verdict).toBe("grew");
    expect(al.finding).toMatch(/real growth of live allocations, not fragmentation/);
    expect(al.facts[0].delta!).toBeGreaterThanOrEqual(U * DYUPS_RING_BYTES);

    // 3. owner: the pool group of create size 512, +U pools (the holder named today is the cycle
    // pool's chain through the upstream module's main conf, not dyups' own list)
    const ow = step(r, "owner");
    expect(ow.verdict).toBe("grew");
    expect(ow.finding).toContain(`pools created with size ${DYUPS_POOL_SIZE}`);
    const owner = ow.facts.find((f) => f.label === "owner")!.note!;
    expect(owner).toMatch(/^(cycle pool|ngx_http_upstream_module \(main conf\))$/);
    // the agent groups pools by holder: the U versions are the named group's new pools plus those
    // of the same create size and creation path held elsewhere, which the step adds up
    const main = /apart, \d+ → \d+ pools \(\+(\d+)\)/.exec(ow.finding);
    expect(main).not.toBeNull();
    const kin = /also grew in \d+ groups? held by (cycle pool|ngx_http_upstream_module \(main conf\))(, (cycle pool|ngx_http_upstream_module \(main conf\)))*: \+(\d+) pools/.exec(ow.finding);
    expect(Number(main![1]) + (kin ? Number(kin[4]) : 0)).toBe(U);
    const group = ow.facts.find((f) => f.key)!;
    const other = ow.facts.find((f) => f.label === "same kind of pool, other holders");
    expect(group.delta! + (other?.delta ?? 0)).toBeGreaterThanOrEqual(U * DYUPS_RING_BYTES);

    // 4. evidence: the 256–512 KB class gained exactly the U rings in use (a free chunk of that
    // class may come and go beside them); they are among the growing group's large blocks
    const ev = step(r, "evidence");
    expect(ev.verdict).toBe("grew");
    expect(ev.finding.startsWith("256–512 KB chunks: ")).toBe(true);
    expect(ev.finding).toContain(`, +${U} in use)`);
    const chunks = Number(/, \+(\d+) since the window's start/.exec(ev.finding)![1]);
    expect(chunks).toBeGreaterThanOrEqual(U);
    expect(Number(/the growing pool group's large blocks \+(\d+)/.exec(ev.finding)![1])).toBeGreaterThanOrEqual(U);
    const cls = ev.facts.find((f) => f.key)!;
    expect(cls.delta!).toBeGreaterThanOrEqual(U * DYUPS_RING_BYTES);
    expect(cls.delta!).toBeLessThanOrEqual(chunks * 512 * 1024);

    // 5. code path: the group's creation path through ngx_create_pool and ngx_dyups_do_update
    // (ngx_dyups_init_upstream is inlined into it); the rings' own call path, U allocations
    const code = step(r, "code");
    expect(code.verdict).toBe("grew");
    expect(code.finding).toMatch(/^The growing pool group was created at [^;]*ngx_create_pool\+0x[0-9a-f]+ ← [^;]*ngx_dyups_do_update\+0x[0-9a-f]+/);
    // the rings' path; its count between the two fetches is near U, not U: a version whose
    // keepalive connection closed is freed by a later update, and the fetches bracket the deep scans
    const rings = /the largest growth by call path is \+[\d.]+ [KMG]?B \((\d+) allocations between two fetches\) at malloc ← ngx_alloc\+0x[0-9a-f]+ ← ngx_palloc_large\+0x[0-9a-f]+ ← ngx_http_upstream_init_chash\+0x[0-9a-f]+ ← [^;]*ngx_dyups_do_update\+0x/.exec(code.finding);
    expect(rings).not.toBeNull();
    expect(Number(rings![1])).toBeGreaterThan(U / 2);
    await sampler(ngx, "disarm");
    expect(ngx.errors().filter((l) => !/dyups/.test(l))).toEqual([]);
  }, 300000);
});
