import { Nginx } from "../harness/nginx";
import { WsPeer } from "../harness/ws-peer";
import { freePort } from "../harness/ports";

/**
 * Frames above the limit are trimmed (shortest lists first) and say so in
 * snapshot.trimmed. The limit is the smaller of the agent's max_frame_bytes and
 * the control plane's welcome.max_frame_bytes.
 */
// many shared dicts make a long shm list (what a Kong-like gateway has), whatever the other collectors report
const DICTS = Array.from({ length: 30 }, (_, i) => `lua_shared_dict push_trim_${i} ${100 + i * 8}k;`).join("\n");
const TRIMMABLE = ["system.regions", "shm", "pools.top", "pools.unrooted", "pools.unrooted.examples", "pools.unrooted.large_histogram"];

function listLen(s: any, name: string): number {
  if (name === "system.regions") return s.system.regions.length;
  if (name === "shm") return s.shm.length;
  if (name === "pools.top") return s.pools.top?.length ?? 0;
  if (name === "pools.unrooted") return s.pools.unrooted?.length ?? 0;
  return 0;
}

describe("push: frames above max_frame_bytes are trimmed and say so", () => {
  let fullBytes = 0;
  let full: any;

  test("measure an untrimmed frame", async () => {
    const peer = new WsPeer({ token: "t" });
    await peer.start(await freePort());
    const ngx = new Nginx({ workers: 1, http: DICTS, agent: { control_plane_url: peer.url, token: "t", interval_s: 1 } });
    await ngx.start();
    try {
      const r = await peer.waitFor("2 snapshots", () => peer.unique().length >= 2 && peer.unique()[1]);
      fullBytes = r.bytes;
      full = r.msg.snapshot;
      expect(full.trimmed).toBeUndefined();
      expect(full.shm.length).toBeGreaterThanOrEqual(30);
    } finally {
      await ngx.stop();
      await peer.stop();
    }
  });

  test("agent max_frame_bytes below the snapshot: regions shortened, trimmed says so, frame fits and validates", async () => {
    const peer = new WsPeer({ token: "t" });
    await peer.start(await freePort());
    // room for the snapshot minus 15% (the limit includes a 512-byte envelope reserve): every snapshot needs trimming,
    // whatever the other collectors add or leave out between runs
    const limit = fullBytes + 512 - Math.max(600, Math.floor(fullBytes * 0.15));
    const ngx = new Nginx({ workers: 2, http: DICTS, agent: { control_plane_url: peer.url, token: "t", interval_s: 1, max_frame_bytes: limit } });
    await ngx.start();
    try {
      const pids = ngx.workerPids();
      await peer.waitFor("2 snapshots per worker", () => pids.every((p) => peer.unique(p).length >= 2));
      for (const r of peer.received) {
        expect(r.bytes).toBeLessThanOrEqual(limit);
        expect(r.error).toBeUndefined();
        const s = r.msg.snapshot as any;
        expect(s.trimmed.length).toBeGreaterThanOrEqual(1);
        for (const name of s.trimmed) {
          expect(TRIMMABLE).toContain(name);
          if (listLen(full, name) > 0) expect(listLen(s, name)).toBeLessThan(listLen(full, name));
        }
        // the biggest zone is kept
        const biggest = [...full.shm].sort((a: any, b: any) => b.size_bytes - a.size_bytes)[0].name;
        expect(s.shm.map((z: any) => z.name)).toContain(biggest);
      }
      // a collection made by a request (?fresh=1) is trimmed after the response, in a timer
      const fresh = JSON.parse((await ngx.memdiag("?fresh=1")).body).workers;
      const mine = await peer.waitFor("the fresh snapshots", () => fresh.every((f: any) => peer.unique(f.pid).some((r) => r.msg.seq === f.seq)) && fresh);
      for (const f of mine) {
        const r = peer.unique(f.pid).find((x) => x.msg.seq === f.seq)!;
        expect(r.bytes).toBeLessThanOrEqual(limit);
        expect((r.msg.snapshot as any).trimmed.length).toBeGreaterThanOrEqual(1);
        expect(r.valid).toBe(true);
      }
      // the worker's own /_memdiag still has the whole snapshot
      const local = JSON.parse((await ngx.memdiag(`?pid=${pids[0]}`)).body).workers[0];
      expect(local.trimmed).toBeUndefined();
      expect(local.shm.length).toBe(full.shm.length);
      expect(peer.tooLarge).toBe(0);
    } finally {
      await ngx.stop();
      await peer.stop();
    }
  });

  test("the control plane's smaller max_frame_bytes (welcome) wins over the agent's", async () => {
    const limit = fullBytes + 512 - Math.max(600, Math.floor(fullBytes * 0.15));
    const peer = new WsPeer({ token: "t", maxFrameBytes: limit });
    await peer.start(await freePort());
    const ngx = new Nginx({ workers: 1, http: DICTS, agent: { control_plane_url: peer.url, token: "t", interval_s: 1 } });
    await ngx.start();
    try {
      await peer.waitFor("3 snapshots", () => peer.unique().length >= 3);
      // the first snapshot was queued before the welcome: it is trimmed again, not dropped nor sent oversized
      for (const r of peer.received) expect(r.bytes).toBeLessThanOrEqual(limit);
      expect(peer.unique()[0].msg.seq).toBe(1);
      expect((peer.unique()[0].msg.snapshot as any).trimmed.length).toBeGreaterThanOrEqual(1);
      expect(ngx.errors().filter((l) => /memdiag push/.test(l))).toEqual([]);
      const trimmed = peer.received.filter((r) => (r.msg.snapshot as any).trimmed);
      expect(trimmed.length).toBeGreaterThanOrEqual(2);
      for (const r of trimmed) expect(r.valid).toBe(true);
      expect(peer.tooLarge).toBe(0);
    } finally {
      await ngx.stop();
      await peer.stop();
    }
  });
});

describe("push: frames above one fragment (64 KB) go as a fragmented message and arrive intact", () => {
  // ~300 zones with long names: a snapshot of ~100 KB without touching the collectors
  const names = Array.from({ length: 300 }, (_, i) => `push_frag_${String(i).padStart(3, "0")}_${"x".repeat(180)}`);
  const dicts = names.map((n) => `lua_shared_dict ${n} 16k;`).join("\n");

  test("the peer receives the whole snapshot, equal to the published one", async () => {
    const peer = new WsPeer({ token: "t" });
    await peer.start(await freePort());
    const ngx = new Nginx({ workers: 1, http: dicts, dictSize: "64m", agent: { control_plane_url: peer.url, token: "t", interval_s: 1 } });
    await ngx.start();
    try {
      const pid = ngx.workerPids()[0];
      const r = await peer.waitFor("a big snapshot", () => peer.unique(pid).find((x) => x.bytes > 65536 * 1.3), 60000);
      expect(r.valid).toBe(true);
      const s = r.msg.snapshot as any;
      expect(s.trimmed).toBeUndefined();
      const got = new Set(s.shm.map((z: any) => z.name));
      for (const n of names) expect(got.has(n)).toBe(true);
      const pub = JSON.parse((await ngx.memdiag(`?pid=${pid}`)).body).workers[0];
      const again = await peer.waitFor("the published seq", () => peer.unique(pid).find((x) => x.msg.seq === pub.seq), 60000);
      expect(again.msg.snapshot).toEqual(pub);
      expect(ngx.errors().filter((l) => /memdiag push/.test(l))).toEqual([]);
      // the push's own worker time: no single piece (enqueue, framing, one fragment's masking + send) is long
      await peer.waitFor("5 frames", () => peer.unique(pid).length >= 5, 60000);
      const st = JSON.parse((await ngx.memdiag("?push=1")).body);
      console.log(`push worker CPU: ${st.cpu_ms.toFixed(2)} ms for ${st.sent} frames of ~${(again.bytes / 1024).toFixed(0)} KB; longest piece ${st.max_piece_ms.toFixed(2)} ms`);
      expect(st.sent).toBeGreaterThan(0);
    } finally {
      await ngx.stop();
      await peer.stop();
    }
  });
});
