/**
 * `memdiag serve` as a real process (bin/memdiag → dist/): starts from env and
 * flags, keeps every acked snapshot across SIGKILL, stops cleanly on SIGTERM.
 */
import * as fs from "fs";
import * as path from "path";
import Database from "better-sqlite3";
import { SimAgent, tempDir, getJson, serveProcess, ServeProcess } from "../harness/control-plane";
import { freePort } from "../harness/ports";
import { buildSnapshot, identityOf } from "../fixtures/snapshots";

const TOKEN = "process-test-token-123";

function serve(db: string, port: number, dir: string): Promise<ServeProcess> {
  return serveProcess(["--port", String(port), "--config", path.join(dir, "none.json")], { env: { ...process.env, MEMDIAG_DB: db, MEMDIAG_TOKEN: TOKEN } });
}

describe("memdiag serve (real process)", () => {
  test("acked snapshots survive SIGKILL; SIGTERM exits 0; the token is not logged", async () => {
    const dir = tempDir();
    const db = path.join(dir, "cp.db");
    const port = await freePort();
    let s = await serve(db, port, dir);
    expect(s.out()).toMatch(new RegExp(`listening on http://127.0.0.1:${port} \\(db ${db.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}, token set\\)`));
    const a = await SimAgent.connect(`ws://127.0.0.1:${port}`);
    const w = await a.hello(identityOf({ pid: 3001 }), TOKEN);
    expect(w.type).toBe("welcome");
    const acked: number[] = [];
    for (let seq = 1; seq <= 50; seq++) {
      const r = await a.push(seq, buildSnapshot({ pid: 3001, seq }));
      if (r.type === "ack") acked.push(r.seq);
    }
    expect(acked).toHaveLength(50);
    s.p.kill("SIGKILL");
    await s.exited;
    await a.closed;
    const d = new Database(db, { readonly: true });
    expect((d.prepare("SELECT seq FROM snapshots ORDER BY seq").all() as { seq: number }[]).map((r) => r.seq)).toEqual(acked);
    d.close();

    s = await serve(db, port, dir);
    const ws = (await getJson(`http://127.0.0.1:${port}/api/workers`)).body;
    expect(ws[0]).toMatchObject({ key: w.worker_key, state: "gone", snapshots: 50 });
    s.p.kill("SIGTERM");
    expect(await s.exited).toBe(0);
    expect(s.out()).toMatch(/SIGTERM: stopping/);
    expect(s.out()).not.toContain(TOKEN);
  });
});
