import { Nginx, httpGet } from "../harness/nginx";
import { WsPeer, pushingNginx } from "../harness/ws-peer";
import { PLATFORM } from "../harness/platform";

/**
 * Agent push against a test peer (test/harness/ws-peer.ts) from a real nginx with
 * two workers: identity, schema, order, commands.
 */
describe("push: snapshots from every worker reach the control plane", () => {
  const peer = new WsPeer({ token: "t" });
  let ngx: Nginx;

  pushingNginx(peer, (n) => (ngx = n));

  test("both workers say hello with their identity and push valid snapshots in seq order", async () => {
    const pids = ngx.workerPids();
    expect(pids.length).toBe(2);
    await peer.waitFor("3 snapshots from each worker", () => pids.every((p) => peer.unique(p).length >= 3));
    for (const pid of pids) {
      const hello = peer.hellos.find((h) => h.agent.pid === pid)!;
      expect(hello).toBeDefined();
      expect(hello.token).toBe("t");
      expect(hello.protocol).toBe(1);
      const snaps = peer.unique(pid);
      for (const r of snaps) {
        expect(r.error).toBeUndefined();
        expect(r.valid).toBe(true);
        const s = r.msg.snapshot as any;
        expect(s.pid).toBe(pid);
        expect(r.msg.seq).toBe(s.seq);
        // the hello identity is the snapshot's identity
        expect(hello.agent.host).toBe(s.host);
        expect(hello.agent.instance).toBe(s.instance);
        expect(hello.agent.worker_start).toBe(s.worker_start);
        expect(hello.agent.generation).toBe(s.generation);
        expect(hello.agent.nginx_version).toBe(PLATFORM.coreVersion);
        expect(hello.agent.agent_version).toBe(s.agent_version);
      }
      const seqs = snaps.map((r) => r.msg.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      // nothing skipped while the control plane is up
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBe(seqs[i - 1] + 1);
    }
    const ids = new Set(peer.hellos.map((h) => h.agent.worker_id));
    expect(ids).toEqual(new Set([0, 1]));
  });

  test("the websocket client is the platform's: resty.websocket.client on OpenResty and Tengine", async () => {
    const st = JSON.parse((await ngx.memdiag("?push=1")).body);
    expect(st.connected).toBe(true);
    expect(st.library).toBe(PLATFORM.name === "debian" ? "nginx.websocket.client" : "resty.websocket.client");
  });

  test("what the peer received equals what the worker published (same JSON)", async () => {
    const pid = ngx.workerPids()[0];
    const r = await ngx.memdiag(`?pid=${pid}`);
    const pub = JSON.parse(r.body).workers[0];
    const got = await peer.waitFor("that seq", () => peer.unique(pid).find((x) => x.msg.seq === pub.seq));
    expect(got.msg.snapshot).toEqual(pub);
  });

  test("a collect command is answered with a fresh snapshot carrying reply_to", async () => {
    const pid = ngx.workerPids()[1];
    const before = Math.max(...peer.unique(pid).map((r) => r.msg.seq));
    const id = peer.command(pid, "collect");
    const reply = await peer.waitFor("reply", () => peer.received.find((r) => r.msg.reply_to === id));
    expect(reply.pid).toBe(pid);
    expect(reply.valid).toBe(true);
    expect(reply.msg.seq).toBeGreaterThan(before);
    expect(peer.received.filter((r) => r.msg.reply_to === id).length).toBe(1);
  });

  test("a deep command runs a deep scan and is answered by a snapshot carrying its result", async () => {
    const pid = ngx.workerPids()[0];
    const id = peer.command(pid, "deep");
    const res = await peer.waitFor("deep answer", () => peer.results.find((r) => r.id === id) ?? peer.received.find((r) => r.msg.reply_to === id), 120000);
    expect("ok" in res ? res : undefined).toBeUndefined();
    const r = res as any;
    expect(r.valid).toBe(true);
    expect(r.pid).toBe(pid);
    expect(r.msg.snapshot.scan.state).toBe("done");
    expect(Array.isArray(r.msg.snapshot.glibc.size_classes)).toBe(true);
  });

  test("one command at a time per worker: a second one while a deep scan runs is refused, the first still answers", async () => {
    const pid = ngx.workerPids()[1];
    const deep = peer.command(pid, "deep");
    const second = peer.command(pid, "collect");
    const r2 = await peer.waitFor("second result", () => peer.results.find((r) => r.id === second) ?? peer.received.find((r) => r.msg.reply_to === second));
    expect(r2).toMatchObject({ ok: false, error: "another command is running" });
    const r1 = await peer.waitFor("deep answer", () => peer.received.find((r) => r.msg.reply_to === deep), 120000);
    expect((r1.msg.snapshot as any).scan.state).toBe("done");
  });

  test("unknown commands get command_result ok:false", async () => {
    const pid = ngx.workerPids()[0];
    const bad = peer.command(pid, "explode");
    const br = await peer.waitFor("bad result", () => peer.results.find((r) => r.id === bad));
    expect(br.ok).toBe(false);
    expect(br.error).toMatch(/unknown command 'explode'/);
  });

  test("one connection per worker, requests unaffected, no errors logged", async () => {
    const live = peer.live();
    expect(live.map((c) => c.hello!.agent.pid).sort()).toEqual(ngx.workerPids());
    expect((await httpGet(ngx.appPort, "/ok")).status).toBe(200);
    expect(ngx.errors()).toEqual([]);
  });
});
