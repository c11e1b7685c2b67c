/**
 * The reference case study, for real, on Tengine 3.1.0 with its dynamic-upstream module:
 * the upstream re-posted U times (consistent hash over 150 servers, upstream keepalive), a
 * request or two through each version. Each version's pool stays alive while an idle
 * keepalive connection opened through it sits in that version's cache: the connection pool's
 * cleanup holds the version's reference count above zero, and dyups frees a deleted version
 * only when an update finds its count at zero. memdiag's four steps, against ground truth:
 * /proc (RSS), the number of updates made by the test, the ring size the hash balancer
 * allocates (150 servers x 160 points x 16 bytes), and the backend connections in /proc/net/tcp.
 */
import * as fs from "fs";
import { execFileSync } from "child_process";
import { Nginx } from "../harness/nginx";
import { startDyups } from "../harness/dyups";
import { PLATFORM } from "../harness/platform";
import { ensureSampler, samplerCall as sampler } from "../harness/fixtures";
import { DYUPS_POOL_SIZE, DYUPS_RING_BYTES, dyupsUpdate } from "../../scripts/demo/dyups";
import { validateSnapshot } from "../../schema/validate";
import { Symbolizer } from "../../control-plane/src/elfsym";

const U = 40;
const onTengine = PLATFORM.name === "tengine";
if (!onTengine) console.log(`tengine-dyups: skipped on ${PLATFORM.name} (the dyups module is Tengine's; MEMDIAG_PLATFORM=tengine)`);

/** established TCP connections to `port` seen from process `pid` (its /proc/<pid>/net/tcp) */
function connectionsTo(pid: number, port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  return fs.readFileSync(`/proc/${pid}/net/tcp`, "utf8").split("\n").slice(1)
    .filter((l) => { const f = l.trim().split(/\s+/); return f.length > 3 && f[2]?.endsWith(`:${hexPort}`) && f[3] === "01"; }).length;
}

(onTengine ? describe : describe.skip)("Tengine dyups: pools of superseded upstream versions accumulate; memdiag's four steps", () => {
  let ngx: Nginx;
  let backendPort = 0;
  let dyupsPort = 0;
  let pid = 0;
  beforeAll(async () => {
    ensureSampler();
    ({ ngx, backendPort, dyupsPort } = await startDyups());
    pid = ngx.workerPids()[0];
  });
  afterAll(() => ngx?.stop());

  test(`${U} updates with keepalive: RSS mostly glibc, ${U} dyups pools with their ring blocks, created in ngx_dyups_init_upstream`, async () => {
    // step 4 needs the creation paths: the sampler records every pool block (posix_memalign) in full
    expect(await sampler(ngx, "arm")).toMatchObject({ armed: true });
    const rssBefore = (await ngx.nextSnapshotOf(pid)).system.rss_bytes;
    for (let i = 0; i < U; i++) await dyupsUpdate(dyupsPort, ngx.appPort, backendPort);
    // ground truth for "why": one idle keepalive connection per upstream version, to the backend
    expect(connectionsTo(pid, backendPort)).toBeGreaterThanOrEqual(U);

    const r = await ngx.memdiag("?deep=1");
    expect(r.status).toBe(200);
    const w = JSON.parse(r.body).workers[0];
    expect(validateSnapshot(w).error).toBeUndefined();
    expect(w.scan.state).toBe("done");

    // 1. system: the growth is glibc's
    const glibc = w.system.regions.filter((x: any) => x.class === "glibc_heap").reduce((a: number, x: any) => a + x.rss_bytes, 0);
    expect(w.system.rss_bytes - rssBefore).toBeGreaterThan(U * DYUPS_RING_BYTES * 0.9);
    expect(glibc / w.system.rss_bytes).toBeGreaterThan(0.5);

    // 2. pools: the dyups versions, every one of the U still alive (create size 512, one ring each)
    const groups = w.pools.unrooted.filter((g: any) => g.create_size === DYUPS_POOL_SIZE && g.large_histogram.some((h: any) => h.min_bytes <= DYUPS_RING_BYTES && DYUPS_RING_BYTES <= h.max_bytes));
    const pools = groups.reduce((a: number, g: any) => a + g.pools, 0);
    // every version: the current one and the U - 1 it superseded
    expect(pools).toBe(U);
    const owners = groups.map((g: any) => g.owner);

    // 3. block sizes: U rings in the 256-512 KB class, exactly the ring size each
    const ring = groups.flatMap((g: any) => g.large_histogram).filter((h: any) => h.min_bytes <= DYUPS_RING_BYTES && DYUPS_RING_BYTES <= h.max_bytes);
    expect(ring.reduce((a: number, h: any) => a + h.count, 0)).toBe(U);
    expect(ring.reduce((a: number, h: any) => a + h.bytes, 0)).toBeGreaterThanOrEqual(U * DYUPS_RING_BYTES);
    const cls = w.glibc.size_classes.find((c: any) => c.min_bytes === 262144);
    expect(cls.in_use_chunks).toBeGreaterThanOrEqual(U);

    // 4. the call path that created them
    const j = await sampler(ngx, "pools");
    const found = j.groups.filter((g: any) => groups.some((x: any) => x.signature === g.signature));
    expect(found.length).toBeGreaterThan(0);
    // the worker names exported functions (dladdr); the control plane names static ones from
    // the binary's symbol table, as the consoles show them
    const sym = new Symbolizer();
    let labels: string[] = [];
    for (const g of found) {
      expect(g.created_at.fn).toBe("posix_memalign");
      labels = g.created_at.frames.map((f: any) => sym.label(f));
      expect(labels.some((n: string) => n.startsWith("ngx_create_pool+"))).toBe(true);
      // ngx_dyups_init_upstream is static and called once: -O2 inlines it into ngx_dyups_do_update.
      // The frame's return address, looked up in the binary's DWARF by addr2line, is its
      // ngx_create_pool call inside the inlined ngx_dyups_init_upstream
      const i = labels.findIndex((n: string) => n.startsWith("ngx_dyups_do_update+"));
      expect(i).toBeGreaterThan(labels.findIndex((n: string) => n.startsWith("ngx_create_pool+")));
      const f = g.created_at.frames[i];
      const inl = execFileSync("addr2line", ["-i", "-f", "-e", f.path, `0x${(parseInt(f.offset, 16) - 1).toString(16)}`], { encoding: "utf8" }).split("\n");
      expect(inl[0]).toBe("ngx_dyups_init_upstream");
      expect(inl[2]).toBe("ngx_dyups_do_update");
    }
    await sampler(ngx, "disarm");
    console.log(
      `tengine dyups: ${U} updates -> RSS +${((w.system.rss_bytes - rssBefore) / 1048576).toFixed(1)} MB, glibc ${((100 * glibc) / w.system.rss_bytes).toFixed(0)} % of RSS; ` +
        `${pools} pools of create size ${DYUPS_POOL_SIZE} (owners: ${[...new Set(owners)].join("; ")}); ${U} ring blocks of ${DYUPS_RING_BYTES} B; ` +
        `${connectionsTo(pid, backendPort)} backend connections; created at ${labels.slice(0, 6).join(" < ")}`,
    );
    expect(ngx.errors().filter((l) => !/dyups/.test(l))).toEqual([]);
  });
});

(onTengine ? describe : describe.skip)("Tengine dyups without upstream keepalive: superseded versions are freed", () => {
  let ngx: Nginx;
  let backendPort = 0;
  let dyupsPort = 0;
  beforeAll(async () => {
    ({ ngx, backendPort, dyupsPort } = await startDyups());
  });
  afterAll(() => ngx?.stop());

  test(`${U} updates, no keepalive: only the current version is alive`, async () => {
    for (let i = 0; i < U; i++) await dyupsUpdate(dyupsPort, ngx.appPort, backendPort, 2, false);
    const w = JSON.parse((await ngx.memdiag("?deep=1")).body).workers[0];
    // each update frees the superseded versions whose count is back at zero (all of them: no
    // connection outlives its request); the one pool left is the current version
    const alive = w.pools.unrooted
      .filter((g: any) => g.create_size === DYUPS_POOL_SIZE && g.large_histogram.some((h: any) => h.min_bytes <= DYUPS_RING_BYTES && DYUPS_RING_BYTES <= h.max_bytes))
      .reduce((a: number, g: any) => a + g.pools, 0);
    expect(alive).toBe(1);
    console.log(`tengine dyups without keepalive: ${U} updates -> ${alive} version alive`);
  });
});
