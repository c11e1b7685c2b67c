import * as os from "os";
import { Nginx, sleep } from "../harness/nginx";
import { startCP, RunningCP } from "../harness/control-plane";
import { freePort } from "../harness/ports";
import { WsPeer } from "../harness/ws-peer";
import { runLua } from "../harness/lua";

/**
 * The control plane away, refusing the token, or going away mid-stream, with the
 * default lua_socket_log_errors (on): nginx's error log gets no [error] and one memdiag
 * [warn] per worker per state change, and the agents say once that they are connected
 * again, within the probe's bound after the control plane starts.
 */
const PROBE_MAX_S: number = runLua(`return require("memdiag.push.listening").PROBE_MAX_S`);
/** a worker sleeps at most the backoff cap, then looks and connects; the test polls every 100 ms */
const SLACK_MS = 1500;
/** long enough that the control plane's log redaction of it does not mangle other words */
const TOKEN = "quiet-test-token";

function linesOf(ngx: Nginx, pid: number): string[] {
  return ngx.errorLog().split("\n").filter((l) => l.includes(` ${pid}#`));
}
const memdiagWarns = (ngx: Nginx, pid: number) => linesOf(ngx, pid).filter((l) => /\[warn\]/.test(l) && /memdiag/.test(l));
const connectedLines = (ngx: Nginx, pid: number) => linesOf(ngx, pid).filter((l) => /memdiag push: connected to control plane/.test(l));

/** every current worker's push state (?push=1 is answered by whichever worker takes the request) */
async function pushStates(ngx: Nginx): Promise<Map<number, any>> {
  const pids = ngx.workerPids();
  const out = new Map<number, any>();
  for (let i = 0; i < 200 && !pids.every((p) => out.has(p)); i++) {
    const st = JSON.parse((await ngx.memdiag("?push=1")).body);
    out.set(st.pid, st);
  }
  return out;
}

/** waits until every worker in `pids` logged that it is connected; returns the ms it took */
async function waitConnected(ngx: Nginx, pids: number[], boundMs: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < boundMs + 20000) {
    if (pids.every((p) => connectedLines(ngx, p).length > 0)) return Date.now() - t0;
    await sleep(100);
  }
  throw new Error(`not connected: ${pids}\n${ngx.errorLog().slice(-3000)}`);
}

function expectQuiet(ngx: Nginx): void {
  expect(ngx.errors()).toEqual([]);
  expect(ngx.errorLog()).not.toMatch(/connect\(\) failed/);
}

describe("quiet: no control plane for several backoff rounds and a reload, then it starts", () => {
  let ngx: Nginx;
  let cp: RunningCP | undefined;
  let port = 0;
  const gens: number[][] = [];
  const probes: number[] = [];
  let tookMs = 0;

  beforeAll(async () => {
    port = await freePort();
    ngx = new Nginx({ workers: 2, agent: { control_plane_url: `ws://127.0.0.1:${port}/ingest`, token: TOKEN, interval_s: 1 } });
    await ngx.start();
    gens.push(ngx.workerPids());
    await sleep(9000);
    for (const st of (await pushStates(ngx)).values()) probes.push(st.probes_idle);
    await ngx.reload();
    gens.push(ngx.workerPids());
    await sleep(9000);
    for (const st of (await pushStates(ngx)).values()) probes.push(st.probes_idle);
    cp = await startCP({ port, token: TOKEN });
    tookMs = await waitConnected(ngx, gens[1], PROBE_MAX_S * 1000);
  });
  afterAll(async () => {
    await ngx?.stop();
    await cp?.stop();
  });

  test("several probe rounds per worker, none of them a connect", async () => {
    expect(probes.length).toBe(4);
    for (const n of probes) expect(n).toBeGreaterThanOrEqual(4);
    const st = await pushStates(ngx);
    for (const s of st.values()) expect(s.failed_connects).toBe(0);
  });

  test("no [error] and one memdiag [warn] per worker (old and new generation) for the whole outage", () => {
    expectQuiet(ngx);
    for (const p of [...gens[0], ...gens[1]]) {
      const w = memdiagWarns(ngx, p);
      expect(w).toHaveLength(1);
      expect(w[0]).toMatch(/no control plane listening at ws:\/\/127\.0\.0\.1:\d+\/ingest/);
    }
  });

  test("after it starts every worker connects within the probe bound and says so once", async () => {
    console.log(`connected ${tookMs} ms after the control plane started (bound ${PROBE_MAX_S} s)`);
    expect(tookMs).toBeLessThanOrEqual(PROBE_MAX_S * 1000 + SLACK_MS);
    await sleep(1500);
    for (const p of gens[1]) {
      const c = connectedLines(ngx, p);
      expect(c).toHaveLength(1);
      expect(c[0]).toMatch(/\[notice\].*connected to control plane at .* after \d+ attempts over/);
      // the control plane saw it (its own log, not the agent's word)
      expect(cp!.logs.filter((l) => / connected from /.test(l)).join("\n")).toContain(`/${p}/`);
    }
    expectQuiet(ngx);
  });
});

describe("quiet: a control plane that refuses the token, then one that accepts it", () => {
  let ngx: Nginx;
  let cp: RunningCP | undefined;
  let pids: number[] = [];
  let refusals = 0;
  let tookMs = 0;
  const CAP = 2;

  beforeAll(async () => {
    const port = await freePort();
    cp = await startCP({ port, token: "right" });
    ngx = new Nginx({ workers: 2, agent: { control_plane_url: `ws://127.0.0.1:${port}/ingest`, token: "wrong", interval_s: 1, reconnect_max_s: CAP } });
    await ngx.start();
    pids = ngx.workerPids();
    await sleep(10000);
    refusals = cp.logs.filter((l) => /closing 4401/.test(l)).length;
    await cp.stop();
    cp = await startCP({ port, token: "wrong" });
    tookMs = await waitConnected(ngx, pids, Math.max(CAP, PROBE_MAX_S) * 1000);
  });
  afterAll(async () => {
    await ngx?.stop();
    await cp?.stop();
  });

  test("several refused attempts, one [warn] per worker about the token, no [error]", () => {
    // ground truth from the control plane's side: it closed every attempt with 4401
    expect(refusals).toBeGreaterThanOrEqual(pids.length * 4);
    expectQuiet(ngx);
    for (const p of pids) {
      const w = memdiagWarns(ngx, p);
      expect(w.filter((l) => /rejected the token/.test(l))).toHaveLength(1);
      // the restart may be seen as one more state change (nothing listening for a moment)
      expect(w.length - 1).toBe(w.filter((l) => /no control plane listening/.test(l)).length);
      expect(w.length).toBeLessThanOrEqual(2);
    }
  });

  test("connects within the backoff bound once the token matches, and says so once", async () => {
    console.log(`connected ${tookMs} ms after the accepting control plane started (cap ${CAP} s, probe ${PROBE_MAX_S} s)`);
    expect(tookMs).toBeLessThanOrEqual(Math.max(CAP, PROBE_MAX_S) * 1000 + SLACK_MS);
    await sleep(1500);
    for (const p of pids) expect(connectedLines(ngx, p)).toHaveLength(1);
    expectQuiet(ngx);
  });
});

/** a control plane that can go away and come back on the same port */
interface Away {
  start(port: number): Promise<void>;
  stop(): Promise<void>;
}
/** the real control plane, stopped cleanly (close 1001 to every agent) */
function realCP(): Away {
  let cp: RunningCP | undefined;
  return {
    start: async (port) => void (cp = await startCP({ port, token: TOKEN })),
    stop: async () => {
      await cp?.stop();
      cp = undefined;
    },
  };
}
/** a wire-protocol peer whose connections are cut without a close frame (like a killed process) */
function killedPeer(): Away {
  const peer = new WsPeer({ token: TOKEN });
  return { start: (port) => peer.start(port), stop: () => peer.stop() };
}

describe.each([
  ["stopped cleanly", realCP],
  ["killed (connections cut)", killedPeer],
])("quiet: the control plane goes away mid-stream (%s) and comes back", (_how, make) => {
  let ngx: Nginx;
  const cp = make();
  let pids: number[] = [];
  let port = 0;
  let tookMs = 0;
  let probesAway = new Map<number, any>();

  beforeAll(async () => {
    port = await freePort();
    await cp.start(port);
    ngx = new Nginx({ workers: 2, agent: { control_plane_url: `ws://127.0.0.1:${port}/ingest`, token: TOKEN, interval_s: 1 } });
    await ngx.start();
    pids = ngx.workerPids();
    await waitConnected(ngx, pids, 10000);
    await sleep(1500);
    await cp.stop();
    await sleep(10000);
    probesAway = await pushStates(ngx);
    await cp.start(port);
    const t0 = Date.now();
    while (Date.now() - t0 < 30000 && !pids.every((p) => connectedLines(ngx, p).length >= 2)) await sleep(100);
    tookMs = Date.now() - t0;
  });
  afterAll(async () => {
    await ngx?.stop();
    await cp.stop();
  });

  test("while it is away: probes only, no [error], one [warn] per worker", () => {
    for (const st of probesAway.values()) {
      expect(st.connected).toBe(false);
      expect(st.probes_idle).toBeGreaterThanOrEqual(4);
      expect(st.failed_connects).toBe(0);
    }
    expectQuiet(ngx);
    for (const p of pids) {
      const w = memdiagWarns(ngx, p);
      expect(w).toHaveLength(1);
      expect(w[0]).toMatch(/lost the connection to the control plane/);
    }
  });

  test("back within the probe bound: one line when it connected first, one when it came back", async () => {
    console.log(`reconnected ${tookMs} ms after the control plane restarted (bound ${PROBE_MAX_S} s)`);
    expect(tookMs).toBeLessThanOrEqual(PROBE_MAX_S * 1000 + SLACK_MS);
    await sleep(1500);
    for (const p of pids) {
      const c = connectedLines(ngx, p);
      expect(c).toHaveLength(2);
      expect(c[0]).toMatch(/\[info\]/);
      expect(c[1]).toMatch(/\[notice\].*after \d+ attempts over .*lost the connection/);
    }
    expectQuiet(ngx);
  });
});

const lanIp = Object.values(os.networkInterfaces())
  .flat()
  .find((a) => a && a.family === "IPv4" && !a.internal)?.address;

(lanIp ? describe : describe.skip)("quiet: a control plane at an address the agent cannot probe (not loopback)", () => {
  let ngx: Nginx;
  let cp: RunningCP | undefined;
  let pids: number[] = [];
  let tookMs = 0;
  let during = "";
  let states = new Map<number, any>();
  const CAP = 3;
  const WORKERS = 4;

  beforeAll(async () => {
    const port = await freePort();
    ngx = new Nginx({ workers: WORKERS, agent: { control_plane_url: `ws://${lanIp}:${port}/ingest`, token: TOKEN, interval_s: 1, remote_reconnect_max_s: CAP } });
    await ngx.start();
    pids = ngx.workerPids();
    await sleep(12000);
    during = ngx.errorLog();
    states = await pushStates(ngx);
    cp = await startCP({ host: "0.0.0.0", port, token: TOKEN });
    tookMs = await waitConnected(ngx, pids, (CAP + PROBE_MAX_S) * 1000);
  });
  afterAll(async () => {
    await ngx?.stop();
    await cp?.stop();
  });

  test("only one worker at a time connects (each failed connect is an nginx [error]); the others wait for its turn", () => {
    const failed = during.split("\n").filter((l) => /connect\(\) failed/.test(l));
    const who = new Set(failed.map((l) => Number(/ (\d+)#/.exec(l)![1])));
    console.log(`${failed.length} nginx connect errors in 12 s from ${who.size} of ${WORKERS} workers (remote cap ${CAP} s)`);
    expect(who.size).toBe(1);
    // the backoff of one worker: 0.25-0.5, 0.5-1, 1-2, then 1.5-3 s apart
    expect(failed.length).toBeGreaterThanOrEqual(4);
    expect(failed.length).toBeLessThanOrEqual(10);
    // nginx's own connect errors are the only [error]s
    expect(during.split("\n").filter((l) => /\[(error|crit|alert|emerg)\]/.test(l) && !/connect\(\) failed/.test(l))).toEqual([]);
    const total = [...states.values()].reduce((s, st) => s + st.failed_connects, 0);
    expect(total).toBe(failed.length);
    for (const st of states.values()) if (st.failed_connects === 0) expect(st.turns_waited).toBeGreaterThan(0);
    for (const p of pids) expect(memdiagWarns({ errorLog: () => during } as Nginx, p).length).toBe(1);
  });

  test("when it comes up every worker connects within the cap plus the wait between looks, and says so once", async () => {
    console.log(`all ${WORKERS} workers connected ${tookMs} ms after the control plane started (cap ${CAP} s, waits ${PROBE_MAX_S} s)`);
    expect(tookMs).toBeLessThanOrEqual((CAP + PROBE_MAX_S) * 1000 + SLACK_MS);
    await sleep(1500);
    for (const p of pids) expect(connectedLines(ngx, p)).toHaveLength(1);
  });
});
