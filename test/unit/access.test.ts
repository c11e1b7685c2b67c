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
