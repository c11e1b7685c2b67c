import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { spawnSync } from "child_process";
import { checkConfig, ROOT } from "../../control-plane/src/config-file";
import { AGENT_DEFAULTS, AGENT_KEYS } from "../../lua-src/memdiag/contract/config";

describe("memdiag.config.json is checked against the contract", () => {
  test("every agent key has a default of its declared type", () => {
    for (const [k, spec] of Object.entries(AGENT_KEYS)) {
      const d = (AGENT_DEFAULTS as unknown as Record<string, unknown>)[k];
      expect(d).toEqual(spec.default);
      if (spec.type === "string[]") expect(Array.isArray(d)).toBe(true);
      else expect(typeof d).toBe(spec.type);
    }
  });

  test("valid keys pass and keep their values; absent ones are not invented", () => {
    const c = checkConfig({ token: "t", control_plane: { retention_days: 7 }, agent: { interval_s: 2, allow: ["10.0.0.0/8"] } });
    expect(c.token).toBe("t");
    expect(c.control_plane.retention_days).toBe(7);
    expect(c.control_plane.full_resolution_hours).toBe(24);
    expect(c.agent).toEqual({ interval_s: 2, allow: ["10.0.0.0/8"] });
  });

  test("unknown keys are refused with the valid ones listed", () => {
    expect(() => checkConfig({ agent: { interval: 5 } })).toThrow(/config\.agent: unknown key 'interval' \(valid: interval_s, regions_every_s, slice_ms,/);
    expect(() => checkConfig({ lisen: "127.0.0.1:1" })).toThrow(/unknown key 'lisen' \(valid: listen, dict_size, token, control_plane, agent\)/);
    expect(() => checkConfig({ control_plane: { port: 1 } })).toThrow(/config\.control_plane: unknown key 'port' \(valid: listen, db, push,/);
  });

  test("mistyped and out-of-range values are refused with the key named", () => {
    expect(() => checkConfig({ agent: { interval_s: "5" } })).toThrow(/config\.agent\.interval_s: expected a number, got string/);
    expect(() => checkConfig({ agent: { allow: "127.0.0.1" } })).toThrow(/config\.agent\.allow: expected an array of strings/);
    expect(() => checkConfig({ agent: { slice_ms: 0 } })).toThrow(/config\.agent\.slice_ms: 0 is outside 0\.01\.\.100/);
    expect(() => checkConfig({ control_plane: { push: "yes" } })).toThrow(/config\.control_plane\.push: expected a boolean/);
    expect(() => checkConfig({ agent: [] })).toThrow(/config\.agent: expected an object/);
  });

  test("npm run configure refuses a bad file, names the key, and writes nothing", () => {
    const script = path.join(ROOT, "dist", "scripts", "configure.js");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-cfg-"));
    const file = path.join(dir, "memdiag.config.json");
    fs.writeFileSync(file, JSON.stringify({ agent: { intervall_s: 5 } }));
    const conf = path.join(ROOT, "nginx-conf", "memdiag.conf");
    const before = fs.existsSync(conf) ? fs.statSync(conf).mtimeMs : -1;
    const r = spawnSync(process.execPath, [script], { env: { ...process.env, MEMDIAG_CONFIG: file }, encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`memdiag configure: ${file}: config.agent: unknown key 'intervall_s' (valid: interval_s,`);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/); // a message, not a stack trace
    expect(fs.existsSync(conf) ? fs.statSync(conf).mtimeMs : -1).toBe(before);
  });
});
