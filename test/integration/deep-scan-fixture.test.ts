/**
 * Deep scan against the leak fixture (test/fixtures/leaky_upstream): a module that
 * "updates an upstream" by creating a pool + a 300 KB server table and keeps the
 * pools on a list whose head is in its .bss (or its main conf). Ground truth is the
 * fixture's own status JSON (what it allocated, where the head lives).
 */
import { deepScan } from "../harness/deep";
import { Nginx, httpGet } from "../harness/nginx";
import { leakyLoadModule, LEAKY_LOCATIONS, LEAKY_POOL_SIZE } from "../harness/fixtures";
import { validateSnapshot } from "../../schema/validate";

const N = 25;
const CLASS_256K = 262144;

function cls(s: any, min: number): any {
  return s.glibc.size_classes.find((c: any) => c.min_bytes === min) ?? { chunks: 0, in_use_chunks: 0 };
}


async function app(ngx: Nginx, path: string): Promise<any> {
  const r = await httpGet(ngx.appPort, path);
  if (r.status !== 200) throw new Error(`${path}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}

/** the unrooted group holding the fixture's pools (by address), and how many of them it holds */
function groupOf(s: any, pools: string[]): any {
  const want = new Set(pools);
  const gs = s.pools.unrooted.filter((g: any) => g.examples.some((e: string) => want.has(e)));
  expect(gs.length).toBe(1);
  return gs[0];
}

describe.each([
  ["bss", /^ngx_http_leaky_upstream_module\.so \(\.bss\+0x[0-9a-f]+\)$|^ngx_http_leaky_upstream_module\.so \(ngx_http_leaky_upstream_head\)$/],
  ["conf", /^ngx_http_leaky_upstream_module \(main conf\)$/],
])("deep scan with the leak fixture, list head in %s", (holder, ownerRe) => {
  const ngx = new Nginx({
    workers: 1,
    main: leakyLoadModule(),
    http: `leaky_upstream_holder ${holder};`,
    appLocations: LEAKY_LOCATIONS + "    location = /leaky/stale { leaky_upstream_stale; }\n",
  });
  beforeAll(async () => {
    await ngx.start();
    await ngx.snapshots();
  });
  afterAll(() => ngx.stop());

  test(`after ${N} leaky updates one unrooted group has the ${N} pools, owned by the fixture module`, async () => {
    const before = await deepScan(ngx);
    const st = await app(ngx, `/leaky/update-leak?n=${N}`);
    expect(st.live_pools).toBe(N);
    const s = await deepScan(ngx);
    const g = groupOf(s, st.pools);
    // every live pool of the fixture is in the group, nothing else
    expect(g.pools).toBe(st.live_pools);
    expect(g.create_size).toBe(LEAKY_POOL_SIZE);
    expect(g.blocks).toBe(st.pool_blocks);
    expect(g.block_bytes).toBe(st.pool_block_bytes);
    expect(g.large_blocks).toBe(st.large_allocs);
    // usable sizes: at least what was requested, at most a page of slack per table
    expect(g.large_bytes).toBeGreaterThanOrEqual(st.large_bytes);
    expect(g.large_bytes).toBeLessThanOrEqual(st.large_bytes + st.large_allocs * 8192);
    expect(g.large_histogram).toEqual([expect.objectContaining({ min_bytes: CLASS_256K, count: st.large_allocs })]);
    expect(g.owner).toMatch(ownerRe);
    expect(g.retainer.startsWith(`${g.owner} → pool`)).toBe(true);
    // the allocator's view: the 256-512 KB class rose by N in-use chunks
    expect(cls(s, CLASS_256K).in_use_chunks - cls(before, CLASS_256K).in_use_chunks).toBe(N);
    console.log(`[${holder}] group: ${JSON.stringify({ ...g, large_histogram: undefined })}\n  scan: ${JSON.stringify(s.scan)}`);
  });

  test("in the correct variant the group stays at one pool and the class does not grow", async () => {
    await app(ngx, "/leaky/reset");
    const before = await deepScan(ngx);
    const st = await app(ngx, `/leaky/update-correct?n=${N}`);
    expect(st.live_pools).toBe(1);
    const s = await deepScan(ngx);
    const g = groupOf(s, st.pools);
    expect(g.pools).toBe(1);
    expect(g.owner).toMatch(ownerRe);
    expect(cls(s, CLASS_256K).in_use_chunks - cls(before, CLASS_256K).in_use_chunks).toBeLessThanOrEqual(1);
  });

  test.each([["directly", ""], ["through a heap chunk", "&via=chunk"]])("a stale word pointing into the chain (3rd oldest pool) %s does not take the older pools from the list head's owner", async (_how, via) => {
    await app(ngx, "/leaky/reset");
    const st = await app(ngx, `/leaky/update-leak?n=${N}`);
    expect(st.live_pools).toBe(N);
    // ground truth: the fixture plants the word and says where it and the real head are
    const stale = await app(ngx, `/leaky/stale?k=3${via}`);
    expect(stale.live).toBe(N);
    expect(parseInt(stale.target_pool, 16)).toBe(parseInt(st.pools[N - 3], 16));
    try {
      const s = await deepScan(ngx);
      const g = groupOf(s, st.pools);
      // one group: the pools the stale word reaches (the 3 oldest) stay with the chain's head
      expect(g.pools).toBe(N);
      expect(g.owner).toMatch(ownerRe);
      // the root word of the group is the list head (the fixture's head_addr), not the stale word
      expect(parseInt(g.root_ref, 16)).toBe(parseInt(stale.head_addr, 16));
      expect(parseInt(g.root_ref, 16)).not.toBe(parseInt(stale.stale_addr, 16));
      console.log(`stale: ${JSON.stringify(stale)} group root ${g.root_ref} owner ${g.owner} others ${JSON.stringify(g.other_roots)}`);
      // the planted word is reported as an alternative root of the group, reaching the 3 oldest
      // pools (real stale words may show up there too: a cycle-pool word into an old pool was seen)
      const planted = (g.other_roots ?? []).find((o: any) => parseInt(o.root_ref, 16) === parseInt(stale.stale_addr, 16));
      expect(planted).toEqual(expect.objectContaining({ pools: 3, owner: expect.stringMatching(/^ngx_http_leaky_upstream_module\.so \(/) }));
      for (const o of g.other_roots) expect(o.pools).toBeLessThan(N);
    } finally {
      await app(ngx, "/leaky/stale?k=0");
    }
  });

  test("no errors, no crash", () => {
    expect(ngx.errors()).toEqual([]);
  });
});
