import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { resolveServeOptions, UsageError } from "../../control-plane/src/options";

describe("memdiag serve options: flags > env > config file > defaults", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-opt-"));
  const cfg = path.join(dir, "memdiag.config.json");
  fs.writeFileSync(cfg, JSON.stringify({ token: "from-file", control_plane: { listen: "127.0.0.2:7000", db: "state/cp.db", retention_days: 7 } }));
  const none = path.join(dir, "absent.json");

  test("defaults: loopback 9146, memdiag.db, no token", () => {
    const o = resolveServeOptions(["--config", none], {});
    expect([o.host, o.port, o.token, path.basename(o.db), o.retentionDays, o.fullResolutionHours]).toEqual(["127.0.0.1", 9146, "", "memdiag.db", 30, 24]);
  });

  test("config file: listen, db relative to the file, token, retention", () => {
    const o = resolveServeOptions(["--config", cfg], {});
    expect([o.host, o.port, o.db, o.token, o.retentionDays]).toEqual(["127.0.0.2", 7000, path.join(dir, "state/cp.db"), "from-file", 7]);
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
