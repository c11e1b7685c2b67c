import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { defaultDbPath, resolveServeOptions, UsageError } from "../../control-plane/src/options";

describe("memdiag serve options: flags > env > config file > defaults", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-opt-"));
  const cfg = path.join(dir, "memdiag.config.json");
  fs.writeFileSync(cfg, JSON.stringify({ token: "from-file", control_plane: { listen: "127.0.0.2:7000", db: "state/cp.db", retention_days: 7 } }));
  const none = path.join(dir, "absent.json");

  test("defaults: loopback 9146, the database in the state directory, no token", () => {
    const o = resolveServeOptions(["--config", none], { HOME: "/home/op" }, "/srv/somewhere");
    expect([o.host, o.port, o.token, o.db, o.retentionDays, o.fullResolutionHours]).toEqual(["127.0.0.1", 9146, "", "/home/op/.local/state/memdiag/memdiag.db", 30, 24]);
  });

  test("the state directory follows an absolute XDG_STATE_HOME and ignores a relative one", () => {
    expect(resolveServeOptions(["--config", none], { HOME: "/home/op", XDG_STATE_HOME: "/var/lib/op-state" }, "/x").db).toBe("/var/lib/op-state/memdiag/memdiag.db");
    expect(resolveServeOptions(["--config", none], { HOME: "/home/op", XDG_STATE_HOME: "rel/state" }, "/x").db).toBe("/home/op/.local/state/memdiag/memdiag.db");
    expect(defaultDbPath({ HOME: "/h" })).toBe("/h/.local/state/memdiag/memdiag.db");
  });

  test("config file: listen, db relative to the working directory, token, retention", () => {
    const o = resolveServeOptions(["--config", cfg], {}, "/srv/run");
    expect([o.host, o.port, o.db, o.token, o.retentionDays]).toEqual(["127.0.0.2", 7000, "/srv/run/state/cp.db", "from-file", 7]);
  });

  test("relative --db and MEMDIAG_DB: relative to the working directory", () => {
    expect(resolveServeOptions(["--config", none, "--db", "a/b.db"], {}, "/srv/run").db).toBe("/srv/run/a/b.db");
    expect(resolveServeOptions(["--config", none], { MEMDIAG_DB: "c.db" }, "/srv/run").db).toBe("/srv/run/c.db");
  });

  test("env beats the file, flags beat env", () => {
    const env = { MEMDIAG_PORT: "7100", MEMDIAG_DB: "/tmp/env.db", MEMDIAG_TOKEN: "from-env", MEMDIAG_HOST: "127.0.0.3" };
    const e = resolveServeOptions(["--config", cfg], env);
    expect([e.host, e.port, e.db, e.token]).toEqual(["127.0.0.3", 7100, "/tmp/env.db", "from-env"]);
    const f = resolveServeOptions(["--config", cfg, "--port", "7200", "--db=/tmp/flag.db", "--token", "from-flag", "--host", "::1"], env);
    expect([f.host, f.port, f.db, f.token]).toEqual(["::1", 7200, "/tmp/flag.db", "from-flag"]);
  });

  test("a non-loopback host without a token is refused; with one it is accepted", () => {
    expect(() => resolveServeOptions(["--config", none, "--host", "0.0.0.0"], {})).toThrow(/refusing to listen on 0.0.0.0 without a token/);
    expect(resolveServeOptions(["--config", none, "--host", "0.0.0.0"], { MEMDIAG_TOKEN: "t" }).host).toBe("0.0.0.0");
  });

  test("bad input is a usage error", () => {
    expect(() => resolveServeOptions(["--config", none, "--port", "x"], {})).toThrow(UsageError);
    expect(() => resolveServeOptions(["--config", none, "--bogus", "1"], {})).toThrow(/unknown option --bogus/);
    expect(() => resolveServeOptions(["--config", none, "--sync", "maybe"], {})).toThrow(/--sync/);
  });
});
