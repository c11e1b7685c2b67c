/**
 * Where `memdiag serve` puts its database (README "Control plane"): started as a real
 * process from a temporary directory, checked on the file system afterwards.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import Database from "better-sqlite3";
import { ROOT } from "../../scripts/config";
import { serveProcess } from "../harness/control-plane";

/** runs `memdiag serve` until it says it listens, then SIGTERM; returns its output */
async function serveOnce(cwd: string, env: NodeJS.ProcessEnv, args: string[] = []): Promise<string> {
  const s = await serveProcess(["--port", "0", ...args], { cwd, env });
  s.p.kill("SIGTERM");
  expect(await s.exited).toBe(0);
  return s.out();
}

/** names in the project folder that look like a database (the old default put memdiag.db there) */
const rootDbs = () => fs.readdirSync(ROOT).filter((n) => /\.db(-wal|-shm)?$/.test(n)).sort();

describe("memdiag serve: database location", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-dbpath-"));
  const home = path.join(tmp, "home");
  const cwd = path.join(tmp, "cwd");
  fs.mkdirSync(home);
  fs.mkdirSync(cwd);
  // no config file: MEMDIAG_CONFIG names one that does not exist (defaults), and nothing else leaks in
  const base = { PATH: process.env.PATH, HOME: home, MEMDIAG_CONFIG: path.join(tmp, "none.json") };
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test("without --db: ~/.local/state/memdiag/memdiag.db (private), printed at startup; nothing in the project or working folder", async () => {
    const before = rootDbs();
    const out = await serveOnce(cwd, base);
    const want = path.join(home, ".local", "state", "memdiag", "memdiag.db");
    expect(out).toContain(`(db ${want},`);
    expect(fs.existsSync(want)).toBe(true);
    // a real SQLite database with the store's tables
    const d = new Database(want, { readonly: true });
    expect((d.prepare("SELECT name FROM sqlite_master WHERE type='table'").all() as { name: string }[]).map((r) => r.name)).toContain("snapshots");
    d.close();
    expect(fs.statSync(path.dirname(want)).mode & 0o777).toBe(0o700);
    expect(rootDbs()).toEqual(before);
    expect(fs.readdirSync(cwd)).toEqual([]);
  });

  test("XDG_STATE_HOME (absolute) moves the state directory", async () => {
    const xdg = path.join(tmp, "xdg-state");
    const out = await serveOnce(cwd, { ...base, XDG_STATE_HOME: xdg });
    const want = path.join(xdg, "memdiag", "memdiag.db");
    expect(out).toContain(`(db ${want},`);
    expect(fs.existsSync(want)).toBe(true);
  });

  test("a relative --db is relative to the working directory, and printed absolute", async () => {
    const before = rootDbs();
    const out = await serveOnce(cwd, base, ["--db", "here.db"]);
    const want = path.join(cwd, "here.db");
    expect(out).toContain(`(db ${want},`);
    expect(fs.existsSync(want)).toBe(true);
    expect(rootDbs()).toEqual(before);
  });
});
