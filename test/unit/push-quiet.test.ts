import { runLua } from "../harness/lua";

/**
 * The logic that keeps nginx's error log readable, with the real defaults: episodes (one
 * line per state change, a count at the end) and how far apart reconnect attempts are.
 */
const EPISODE = `
  local E = require("memdiag.util.episode").Episode
  local L = require("lualib_bundle")
  local lines, t = {}, 1000
  local function mk(unit)
    return L.__TS__New(E, "p: ", unit or {"attempt", "attempts"}, function(level, msg) lines[#lines + 1] = level .. " " .. msg end, function() return t end)
  end
`;

describe("episode logging", () => {
  test("one line when it starts, none while it repeats, one with the count and duration when it ends", () => {
    const r = runLua(`${EPISODE}
      local ep = mk()
      local logged = 0
      for i = 1, 50 do if ep:hit(5, "away", "nothing listens") then logged = logged + 1 end; t = t + 30 end
      local active = ep:active()
      ep["end"](ep, 6, "connected")
      return { lines = arr(lines), logged = logged, active = active, after = ep:active() }`);
    expect(r.logged).toBe(1);
    expect(r.active).toBe(true);
    expect(r.after).toBe(false);
    expect(r.lines).toEqual(["5 p: nothing listens", "6 p: connected after 50 attempts over 25 min (nothing listens)"]);
  });

  test("another condition is a new line that closes the previous one with its count", () => {
    const r = runLua(`${EPISODE}
      local ep = mk()
      for i = 1, 3 do ep:hit(5, "token", "token refused"); t = t + 2 end
      ep:hit(5, "away", "nothing listens")
      ep:hit(5, "away", "nothing listens (again)")
      ep["end"](ep, 6, "connected")
      return arr(lines)`);
    expect(r).toEqual([
      "5 p: token refused",
      "5 p: nothing listens; before that 3 attempts over 6 s (token refused)",
      "6 p: connected after 2 attempts over 0 s (nothing listens)",
    ]);
  });

  test("end without `always`: a single occurrence is not worth a second line, repeats are; nothing running logs nothing", () => {
    const r = runLua(`${EPISODE}
      local ep = mk({"rejected snapshot", "rejected snapshots"})
      local a = ep["end"](ep, 6, "stores again", false)
      ep:hit(4, "schema", "rejected snapshot 7: schema")
      local b = ep["end"](ep, 6, "stores again", false)
      ep:hit(4, "schema", "rejected snapshot 8: schema")
      ep:hit(4, "schema", "rejected snapshot 9: schema")
      t = t + 7200
      local c = ep["end"](ep, 6, "stores again", false)
      return { a = a, b = b, c = c, lines = arr(lines) }`);
    expect([r.a, r.b, r.c]).toEqual([false, false, true]);
    expect(r.lines).toEqual([
      "4 p: rejected snapshot 7: schema",
      "4 p: rejected snapshot 8: schema",
      "6 p: stores again after 2 rejected snapshots over 2.0 h (rejected snapshot 8: schema)",
    ]);
  });
});

describe("reconnect pacing with the real defaults", () => {
  /** attempts a worker makes in `hours` of an outage, its delays drawn as the client draws them */
  function attempts(cap: number, hours: number, seeds: number[]): number[] {
    return runLua(`
      local B = require("memdiag.push.backoff")
      local L = require("lualib_bundle")
      local out = {}
      for _, seed in ipairs(${JSON.stringify(seeds).replace("[", "{").replace("]", "}")}) do
        local b = L.__TS__New(B.Backoff, 0.5, ${cap}, 2, B.seededRand(seed * 7919))
        local t, n = 0, 0
        while t < ${hours} * 3600 do t = t + b:next(); n = n + 1 end
        out[#out + 1] = n
      end
      return arr(out)`);
  }

  test("defaults: 30 s after a failed handshake on this host, 300 s for another host, 5 s between looks at the listening sockets", () => {
    const d = runLua(`local c = require("memdiag.config").defaults; local l = require("memdiag.push.listening")
      return { local_ = c.reconnect_max_s, remote = c.remote_reconnect_max_s, probe = l.PROBE_MAX_S }`);
    expect(d).toEqual({ local_: 30, remote: 300, probe: 5 });
  });

  test("a remote control plane down for a day: the number of connect attempts (nginx logs each) per worker", () => {
    const seeds = Array.from({ length: 16 }, (_, i) => 4000 + i);
    const remote = attempts(300, 24, seeds);
    const old = attempts(30, 24, seeds);
    // after the ramp (0.5 s doubling to the cap) every delay is in [cap/2, cap)
    for (const n of remote) {
      expect(n).toBeGreaterThan(24 * 3600 / 300);
      expect(n).toBeLessThanOrEqual(24 * 3600 / 150 + 10);
    }
    const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
    console.log(`connect attempts per worker in 24 h: cap 300 s ${Math.min(...remote)}-${Math.max(...remote)} (16 workers: ${sum(remote)}); cap 30 s ${Math.min(...old)}-${Math.max(...old)} (16 workers: ${sum(old)})`);
  });
});
