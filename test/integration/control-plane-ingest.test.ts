/**
 * The agent side of the control plane over real websockets against a real
 * SQLite file: authentication, protocol errors, bad frames, oversized frames.
 */
import Database from "better-sqlite3";
import { startCP, SimAgent, RunningCP, getJson } from "../harness/control-plane";
import { buildSnapshot, identityOf } from "../fixtures/snapshots";
import { Close } from "../../control-plane/src/protocol";

const TOKEN = "s3cret-token-for-tests";

function storedCount(db: string): number {
  const d = new Database(db, { readonly: true });
  try {
    return (d.prepare("SELECT COUNT(*) AS n FROM snapshots").get() as { n: number }).n;
  } finally {
    d.close();
  }
}

describe("control plane ingest: auth and protocol errors", () => {
  let cp: RunningCP;
  beforeAll(async () => {
    cp = await startCP({ token: TOKEN, maxBadFrames: 3, maxFrameBytes: 256 * 1024, helloTimeoutMs: 500 });
  });
  afterAll(() => cp.stop());

  test("hello with a wrong token is closed 4401; with none too; the right one is welcomed", async () => {
    const a = await SimAgent.connect(cp.ws);
    a.send({ type: "hello", protocol: 1, token: "wrong", agent: identityOf() });
    expect((await a.closed).code).toBe(Close.UNAUTHORIZED);
    const b = await SimAgent.connect(cp.ws);
    b.send({ type: "hello", protocol: 1, agent: identityOf() });
    expect((await b.closed).code).toBe(Close.UNAUTHORIZED);
    const c = await SimAgent.connect(cp.ws);
    const w = await c.hello(identityOf(), TOKEN);
    expect(w).toEqual({ type: "welcome", worker_key: `${identityOf().instance}/4243/1764150000.25`, max_frame_bytes: 256 * 1024 });
    await c.close();
    // the token never reaches the log
    expect(cp.logs.join("\n")).not.toContain(TOKEN);
  });

  test("an unknown message type is closed 4415", async () => {
    const a = await SimAgent.connect(cp.ws);
    await a.hello(identityOf({ pid: 5001 }), TOKEN);
    a.send({ type: "gossip", text: "hi" });
    const c = await a.closed;
    expect(c.code).toBe(Close.UNKNOWN_TYPE);
    expect(c.reason).toMatch(/unknown message type 'gossip'/);
  });

  test("a first frame that is not a hello is closed 4402, and so is silence", async () => {
    const a = await SimAgent.connect(cp.ws);
    a.send({ type: "snapshot", seq: 1, snapshot: buildSnapshot() });
    expect((await a.closed).code).toBe(Close.HELLO_REQUIRED);
    const b = await SimAgent.connect(cp.ws);
    const c = await b.closed; // helloTimeoutMs = 500 in this server
    expect(c.code).toBe(Close.HELLO_REQUIRED);
    expect(c.reason).toMatch(/no hello/);
  });

  test("malformed JSON and schema-violating snapshots get error replies, nothing is stored, 4400 after 3 in a row", async () => {
    const before = storedCount(cp.db);
    const id = identityOf({ pid: 5002 });
    const a = await SimAgent.connect(cp.ws);
    await a.hello(id, TOKEN);
    a.send("{not json");
    const e1 = await a.next();
    expect(e1.type).toBe("error");
    expect(e1.error).toMatch(/malformed JSON/);
    const bad = buildSnapshot({ pid: 5002 });
    (bad.system as Record<string, unknown>).rss_bytes = -5;
    const e2 = await a.push(7, bad);
    expect(e2).toMatchObject({ type: "error", seq: 7 });
    expect(e2.error).toMatch(/schema: \/system\/rss_bytes/);
    // a good frame in between resets the count
    const ok = await a.push(8, buildSnapshot({ pid: 5002, seq: 8 }));
    expect(ok).toEqual({ type: "ack", seq: 8 });
    const missing = buildSnapshot({ pid: 5002 });
    delete missing.luajit;
    expect((await a.push(9, missing)).error).toMatch(/luajit/);
    expect((await a.push(10, { ...buildSnapshot({ pid: 5002 }), schema: 2 })).type).toBe("error");
    a.send({ type: "snapshot", seq: "x", snapshot: {} });
    const c = await a.closed;
    expect(c.code).toBe(Close.BAD_FRAMES);
    expect(storedCount(cp.db)).toBe(before + 1);
    expect(cp.logs.some((l) => /rejected frame seq 7: schema/.test(l))).toBe(true);
  });

  test("a snapshot whose pid is not the hello's is rejected", async () => {
    const a = await SimAgent.connect(cp.ws);
    await a.hello(identityOf({ pid: 5003 }), TOKEN);
    const e = await a.push(1, buildSnapshot({ pid: 9999 }));
    expect(e.error).toMatch(/pid 9999/);
    await a.close();
  });

  test("an oversized frame closes the socket 1009; the server stays up and stored data is untouched", async () => {
    const id = identityOf({ pid: 5004 });
    const a = await SimAgent.connect(cp.ws);
    await a.hello(id, TOKEN);
    expect(await a.push(1, buildSnapshot({ pid: 5004, seq: 1 }))).toEqual({ type: "ack", seq: 1 });
    const before = storedCount(cp.db);
    const d = new Database(cp.db, { readonly: true });
    const rowsBefore = d.prepare("SELECT id, seq, full FROM snapshots ORDER BY id").all();
    const big = buildSnapshot({ pid: 5004, seq: 2, code_regions: 4000 }); // ≈ 500 KB of JSON
    expect(JSON.stringify(big).length).toBeGreaterThan(256 * 1024);
    a.send({ type: "snapshot", seq: 2, snapshot: big });
    const c = await a.closed;
    expect(c.code).toBe(Close.TOO_LARGE);
    expect(storedCount(cp.db)).toBe(before);
    expect(d.prepare("SELECT id, seq, full FROM snapshots ORDER BY id").all()).toEqual(rowsBefore);
    d.close();
    expect(cp.logs.some((l) => /frame above max_frame_bytes \(262144\); closed 1009/.test(l))).toBe(true);
    // still serving: a new connection works and /api/health answers
    const b = await SimAgent.connect(cp.ws);
    expect((await b.hello(identityOf({ pid: 5005 }), TOKEN)).type).toBe("welcome");
    await b.close();
    expect((await getJson(`${cp.base}/api/health`)).status).toBe(200);
  });
});
