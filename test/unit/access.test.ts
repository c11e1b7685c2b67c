import { runLua } from "../harness/lua";

/** http/access.ts (compiled Lua): who may read /_memdiag. */
function allowed(addr: string | null, allow: string[]): boolean {
  const a = addr === null ? "nil" : JSON.stringify(addr);
  return runLua<{ ok: boolean }>(`return { ok = require("memdiag.http.access").allowed(${a}, {${allow.map((x) => JSON.stringify(x)).join(",")}}) }`).ok;
}

describe("/_memdiag access check", () => {
  test("loopback always: 127.0.0.0/8, ::1, IPv4-mapped ::ffff:127.x, unix sockets", () => {
    for (const a of ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "unix:"]) expect([a, allowed(a, [])]).toEqual([a, true]);
  });

  test("not loopback: other addresses, malformed 127 addresses, mapped non-loopback, nil", () => {
    for (const a of ["10.0.0.5", "128.0.0.1", "127.0.0.256", "127.0.0", "::ffff:10.0.0.1", "::2", "fe80::1", "1127.0.0.1"]) {
      expect([a, allowed(a, [])]).toEqual([a, false]);
    }
    expect(allowed(null, ["0.0.0.0/0"])).toBe(false);
  });

  test("CIDR allowlist: inside and outside, /32, /0, /8 boundaries", () => {
    expect(allowed("10.1.2.3", ["10.0.0.0/8"])).toBe(true);
    expect(allowed("11.0.0.0", ["10.0.0.0/8"])).toBe(false);
    expect(allowed("9.255.255.255", ["10.0.0.0/8"])).toBe(false);
    expect(allowed("10.255.255.255", ["10.0.0.0/8"])).toBe(true);
    expect(allowed("192.168.1.7", ["192.168.1.7/32"])).toBe(true);
    expect(allowed("192.168.1.8", ["192.168.1.7/32"])).toBe(false);
    expect(allowed("203.0.113.9", ["0.0.0.0/0"])).toBe(true);
    expect(allowed("192.168.1.130", ["192.168.1.128/25"])).toBe(true);
    expect(allowed("192.168.1.127", ["192.168.1.128/25"])).toBe(false);
  });

  test("exact entries (IPv4, IPv6 literal); invalid CIDRs match nothing; second entry used", () => {
    expect(allowed("10.0.0.5", ["10.0.0.5"])).toBe(true);
    expect(allowed("2001:db8::1", ["2001:db8::1"])).toBe(true);
    expect(allowed("2001:db8::2", ["2001:db8::1"])).toBe(false);
    expect(allowed("10.0.0.5", ["10.0.0.0/33"])).toBe(false);
    expect(allowed("10.0.0.5", ["300.0.0.0/8"])).toBe(false);
    expect(allowed("10.0.0.5", ["172.16.0.0/12", "10.0.0.0/24"])).toBe(true);
  });
});

/** the access decision as the endpoint takes it: [status, message]; status 0 = served */
function decide(peer: string | null, allow: string[], token: string, action: string | null, authorization: string | null): [number, string | null] {
  const q = (v: string | null) => (v === null ? "nil" : JSON.stringify(v));
  const r = runLua<{ s: number; m: string | null }>(
    `local s, m = require("memdiag.http.access").decide(${q(peer)}, {${allow.map((x) => JSON.stringify(x)).join(",")}}, ${JSON.stringify(token)}, ${q(action)}, ${q(authorization)})
     return { s = s, m = m or NULL }`,
  );
  return [r.s, r.m];
}

describe("peer address: the connection's own, never a header-derived one", () => {
  /** vars: what ngx.var would answer; "THROW" makes the read raise */
  function peer(vars: Record<string, string>): string | null {
    const t = Object.entries(vars).map(([k, v]) => `[${JSON.stringify(k)}] = ${JSON.stringify(v)}`).join(", ");
    return runLua<{ p: string | null }>(
      `local vars = { ${t} }
       local p = require("memdiag.http.access").peerAddress(function(name)
         if vars[name] == "THROW" then error("no such variable") end
         return vars[name]
       end)
       return { p = p or NULL }`,
    ).p;
  }

  test("realip present: $realip_remote_addr wins over a rewritten $remote_addr", () => {
    expect(peer({ realip_remote_addr: "10.1.2.3", remote_addr: "127.0.0.1" })).toBe("10.1.2.3");
  });
  test("realip absent (variable reads nil, or the read throws): $remote_addr", () => {
    expect(peer({ remote_addr: "10.1.2.3" })).toBe("10.1.2.3");
    expect(peer({ realip_remote_addr: "THROW", remote_addr: "10.1.2.4" })).toBe("10.1.2.4");
  });
  test("nothing readable: nil (refused by the allow check)", () => {
    expect(peer({ remote_addr: "THROW" })).toBeNull();
    expect(decide(null, ["0.0.0.0/0"], "t", null, null)[0]).toBe(403);
  });
});

describe("bearer token check", () => {
  const eq = (a: string, b: string) => runLua<{ ok: boolean }>(`return { ok = require("memdiag.http.access").tokenEquals(${JSON.stringify(a)}, ${JSON.stringify(b)}) }`).ok;
  const bearer = (h: string | null) =>
    runLua<{ t: string | null }>(`return { t = require("memdiag.http.access").bearerToken(${h === null ? "nil" : JSON.stringify(h)}) or NULL }`).t;

  test("equal only when every byte and the length match", () => {
    expect(eq("s3cret-token", "s3cret-token")).toBe(true);
    for (const g of ["s3cret-toke", "s3cret-tokenX", "S3cret-token", "s3cret-tokeN", "", "x".repeat(200)]) expect([g, eq(g, "s3cret-token")]).toEqual([g, false]);
    expect(eq("", "")).toBe(false);
  });

  test("Authorization header: Bearer scheme (any case), one token", () => {
    expect(bearer("Bearer abc")).toBe("abc");
    expect(bearer("bearer  abc ")).toBe("abc");
    for (const h of [null, "", "Basic abc", "Bearer", "Bearer a b", "Bearerabc", "Token abc"]) expect([h, bearer(h)]).toEqual([h, null]);
  });
});

describe("access decision: reads need the allowlist, changes also the token", () => {
  const TOKEN = "0123456789abcdef";
  const allow = ["10.9.0.0/24"];

  test("not allowlisted: 403 whatever the action or token", () => {
    for (const action of [null, "sampler=arm"]) {
      const [s, m] = decide("10.8.0.5", allow, TOKEN, action, `Bearer ${TOKEN}`);
      expect([action, s]).toEqual([action, 403]);
      expect(m).toMatch(/10\.8\.0\.5 is not allowed/);
    }
  });

  test("allowlisted: reads served; changes 401 without or with a wrong token, served with it", () => {
    expect(decide("10.9.0.5", allow, TOKEN, null, null)).toEqual([0, null]);
    for (const action of ["sampler=arm", "deep=1", "fresh=1"]) {
      const [s, m] = decide("10.9.0.5", allow, TOKEN, action, null);
      expect([action, s]).toEqual([action, 401]);
      expect(m).toContain(action);
      expect(m).toMatch(/Authorization: Bearer/);
      expect(decide("10.9.0.5", allow, TOKEN, action, `Bearer ${TOKEN}x`)[0]).toBe(401);
      expect(decide("10.9.0.5", allow, TOKEN, action, `Basic ${TOKEN}`)[0]).toBe(401);
      expect(decide("10.9.0.5", allow, TOKEN, action, `Bearer ${TOKEN}`)).toEqual([0, null]);
    }
  });

  test("allowlisted, no token configured: changes refused (403) with what to do; reads served", () => {
    expect(decide("10.9.0.5", allow, "", null, null)).toEqual([0, null]);
    const [s, m] = decide("10.9.0.5", allow, "", "sampler=arm", "Bearer anything");
    expect(s).toBe(403);
    expect(m).toMatch(/no token is configured/);
    // an empty bearer never matches an empty configured token
    expect(decide("10.9.0.5", allow, "", "deep=1", "Bearer ")[0]).toBe(403);
  });

  test("loopback peers: everything, no token needed (as before)", () => {
    for (const p of ["127.0.0.1", "::1", "unix:"]) {
      expect(decide(p, [], TOKEN, "sampler=arm", null)).toEqual([0, null]);
      expect(decide(p, [], "", "deep=1", null)).toEqual([0, null]);
    }
  });
});
