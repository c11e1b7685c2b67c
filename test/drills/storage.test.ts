/**
 * Drill: the control plane's SQLite storage fails under it while agents push (nginx, 2
 * workers, every 0.5 s), on a real filesystem of its own (a small tmpfs mounted by the
 * test; needs root, skipped otherwise):
 *   - disk full: a filler file takes every free byte (the WAL was checkpointed and
 *     truncated first through a second SQLite connection, so the next commit must grow
 *     the file); then the filler is deleted;
 *   - writes refused: RLIMIT_FSIZE of the running control plane lowered to 4 KB (every write
 *     past it fails with EFBIG), then lifted (a tmpfs with open files cannot go read-only);
 *   - the database file is not writable by the control plane's user: refused at start;
 *   - the database path is a directory at start: `memdiag serve` refuses with a clear message.
 * While failing: /api/health says so with the SQLite error, the log has one clear line,
 * the process stays up, /live consoles and /metrics keep getting live data, nginx serves.
 * When fixed: storing resumes by itself, the backlog drains, every seq each worker
 * published during the failure is in the database, and nothing acked is lost.
 */
import Database from "better-sqlite3";
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import WebSocket from "ws";
import { Nginx, sleep } from "../harness/nginx";
import { freePort } from "../harness/ports";
import { ROOT } from "../../control-plane/src/config-file";
import { AckProxy, CPProcess, Load, ensureDist, storedSeqs, tally, tempDir, waitFor } from "./lib";

const isRoot = process.getuid?.() === 0;
const mnt = isRoot ? tempDir("memdiag-drill-fs-") : "";
const dbFile = path.join(mnt, "memdiag.db");

/** by pid (one nginx instance, no pid reuse within the drill) */
const stored = () => storedSeqs(dbFile, "pid");

async function health(cp: CPProcess): Promise<any> {
  return (await fetch(`${cp.base}/api/health`)).json();
}

(isRoot ? describe : describe.skip)("control plane storage fails and comes back", () => {
  let cp: CPProcess;
  let proxy: AckProxy;
  let ngx: Nginx;
  let live: WebSocket;
  let liveSnapshots = 0;
  let load: Load;
  beforeAll(async () => {
    ensureDist();
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=24m,mode=0755", "memdiag-drill", mnt]);
    cp = new CPProcess(await freePort(), dbFile);
    await cp.start();
    proxy = new AckProxy(() => cp.port);
    await proxy.start();
    ngx = new Nginx({ workers: 2, agent: { interval_s: 0.5, control_plane_url: `ws://127.0.0.1:${proxy.port}/ingest` } });
    await ngx.start();
    live = new WebSocket(`ws://127.0.0.1:${cp.port}/live`);
    live.on("message", (d) => {
      if (JSON.parse(d.toString()).type === "snapshot") liveSnapshots++;
    });
    await new Promise((r) => live.once("open", r));
    const pids = ngx.workerPids();
    await waitFor("snapshots stored", () => pids.every((p) => (stored().get(p)?.size ?? 0) >= 3), 30000);
    load = new Load(ngx.appPort, ["/ok"], 2).start();
  }, 90000);

  afterAll(async () => {
    live?.close();
    if (load) await load.stop();
    await ngx?.stop();
    await proxy?.stop();
    await cp?.stop();
    if (isRoot) {
      spawnSync("umount", [mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    }
  });

  /** break storage, check the failure is reported and live data keeps flowing, fix it, check it resumed */
  async function drill(name: string, expectError: RegExp, breakIt: () => void, fixIt: () => void): Promise<string> {
    const pids = ngx.workerPids();
    const logBefore = cp.log.length;
    const errorsBefore = load.result.errors;
    breakIt();
    const t0 = Date.now();
    await waitFor(`${name}: health reports the storage error`, async () => (await health(cp)).ok === false, 30000);
    const h = await health(cp);
    expect(h.store.error).toMatch(expectError);
    const failLog = cp.log.slice(logBefore).split("\n").filter((l) => / error store: cannot write/.test(l));
    expect(failLog.length).toBeGreaterThanOrEqual(1);
    // live data keeps flowing while nothing can be stored
    const liveBefore = liveSnapshots;
    const metricsBefore = await (await fetch(`${cp.base}/metrics`)).text();
    await sleep(3000);
    expect(liveSnapshots).toBeGreaterThan(liveBefore);
    const m = await fetch(`${cp.base}/metrics`);
    expect(m.status).toBe(200);
    expect(await m.text()).not.toBe(metricsBefore);
    expect((await health(cp)).ok).toBe(false);
    expect(cp.running).toBe(true);
    // what the workers published up to the fix must be stored afterwards
    const published = new Map((await ngx.snapshots()).map((s) => [s.pid, s.seq as number]));
    fixIt();
    await waitFor(`${name}: storing resumed`, async () => {
      const x = await health(cp);
      return x.ok === true && x.store.backlog === 0;
    }, 30000);
    await waitFor(`${name}: every published seq stored`, () => {
      const st = stored();
      return pids.every((p) => {
        for (let q = 1; q <= published.get(p)!; q++) if (!st.get(p)?.has(q)) return false;
        return true;
      });
    }, 60000, 250);
    const st = stored();
    let lost = 0;
    for (const [key, seqs] of proxy.acked) {
      const pid = Number(key.split("/")[key.split("/").length - 2]);
      for (const q of seqs) if (!st.get(pid)?.has(q)) lost++;
    }
    expect(lost).toBe(0);
    expect(load.result.errors - errorsBefore).toBe(0);
    const resumed = cp.log.slice(logBefore).split("\n").find((l) => /writable again/.test(l));
    expect(resumed).toBeDefined();
    return `${name}: reported "${h.store.error}", down ${((Date.now() - t0) / 1000).toFixed(1)} s, resumed, 0 acked lost`;
  }

  test("disk full, then space returns", async () => {
    let ok = 0;
    let note = "";
    try {
      note = await drill(
        "disk full",
        /full/i,
        () => {
          // an operator's checkpoint (second connection): the WAL is empty, the next commit must grow it
          const d = new Database(dbFile);
          d.pragma("wal_checkpoint(TRUNCATE)");
          d.close();
          const fd = fs.openSync(path.join(mnt, "filler"), "w");
          const buf = Buffer.alloc(1 << 16, 0x5a);
          try {
            for (;;) fs.writeSync(fd, buf);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
          } finally {
            fs.closeSync(fd);
          }
        },
        () => fs.rmSync(path.join(mnt, "filler")),
      );
      ok = 1;
    } finally {
      tally("SQLite disk full → reported, live, resumes", 1, ok, note);
    }
  }, 180000);

  test("writes refused (file size limit set on the running process: EFBIG), then allowed again", async () => {
    // a tmpfs with open files cannot be remounted read-only; RLIMIT_FSIZE (soft limit) makes every write past
    // 4 KB in any file fail with EFBIG (node ignores SIGXFSZ), and prlimit lifts it again
    let ok = 0;
    let note = "";
    try {
      note = await drill(
        "writes refused",
        /full|IOERR|disk I\/O|too large/i,
        () => execFileSync("prlimit", ["--pid", String(cp.pid), "--fsize=4096:"]),
        () => execFileSync("prlimit", ["--pid", String(cp.pid), "--fsize=unlimited:"]),
      );
      ok = 1;
    } finally {
      tally("SQLite writes refused (EFBIG) → reported, live, resumes", 1, ok, note);
    }
  }, 180000);

  test("database file not writable by the control plane's user: memdiag serve refuses at start with a clear message", () => {
    let ok = 0;
    try {
      const dir = tempDir();
      fs.chmodSync(dir, 0o755);
      const db = path.join(dir, "memdiag.db");
      new Database(db).close();
      fs.chmodSync(db, 0o444);
      const r = spawnSync(process.execPath, [path.join(ROOT, "bin/memdiag"), "serve", "--port", "0", "--db", db], {
        encoding: "utf8", timeout: 20000, uid: 65534, gid: 65534, env: { ...process.env, MEMDIAG_CONFIG: "/nonexistent/memdiag.config.json" },
      });
      fs.rmSync(dir, { recursive: true, force: true });
      console.log(`memdiag serve --db <read-only file> (as nobody): exit ${r.status}: ${(r.stderr + r.stdout).trim().split("\n").slice(0, 3).join(" | ")}`);
      expect(r.status).not.toBe(0);
      expect(r.stderr + r.stdout).toMatch(/readonly|read-only|permission|unable to open/i);
      ok = 1;
    } finally {
      tally("db file read-only → refused at start", 1, ok);
    }
  });

  test("database path is a directory: memdiag serve refuses at start with a clear message", () => {
    let ok = 0;
    try {
      const dir = tempDir();
      const r = spawnSync(process.execPath, [path.join(ROOT, "bin/memdiag"), "serve", "--port", "0", "--db", dir], {
        encoding: "utf8", timeout: 20000, env: { ...process.env, MEMDIAG_CONFIG: "/nonexistent/memdiag.config.json" },
      });
      fs.rmSync(dir, { recursive: true, force: true });
      console.log(`memdiag serve --db <a directory>: exit ${r.status}: ${(r.stderr + r.stdout).trim().split("\n").slice(0, 3).join(" | ")}`);
      expect(r.status).not.toBe(0);
      expect(r.stderr + r.stdout).toMatch(/memdiag\.db|directory|unable to open|cannot open/i);
      ok = 1;
    } finally {
      tally("db path is a directory → refused at start", 1, ok);
    }
  });
});
