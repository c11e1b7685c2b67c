import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { runLua, luaStr } from "../harness/lua";

/**
 * The push's probe of the kernel's listening sockets, against listeners this test opens
 * itself (ground truth: the socket exists or not) and against crafted tables.
 */
function listen(host: string, port = 0): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(port, host, () => resolve(s));
  });
}
const close = (s: net.Server) => new Promise<void>((r) => s.close(() => r()));
const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;

function probe(host: string, port: number, v6 = true): { listens: boolean | null; target: boolean } {
  return runLua(`
    local L = require("memdiag.push.listening")
    local t = L.loopbackTarget(${JSON.stringify(host)}, ${port})
    if t == nil then return { target = false, listens = NULL } end
    local r = L.listens(t, ${v6})
    if r == nil then r = NULL end
    return { target = true, listens = r }`);
}

const ipv6 = (() => {
  try {
    return fs.readFileSync("/proc/net/if_inet6", "utf8").includes("00000000000000000000000000000001");
  } catch {
    return false;
  }
})();

describe("listening-socket probe (/proc/net/tcp, tcp6)", () => {
  test("a listener on 127.0.0.1 is seen while it exists, not after it closes", async () => {
    const s = await listen("127.0.0.1");
    const port = portOf(s);
    expect(probe("127.0.0.1", port)).toEqual({ target: true, listens: true });
    expect(probe("localhost", port).listens).toBe(true);
    // another loopback address on the same port: not the one listening
    expect(probe("127.0.0.2", port).listens).toBe(false);
    await close(s);
    expect(probe("127.0.0.1", port).listens).toBe(false);
  });

  test("a wildcard listener (0.0.0.0) serves every loopback address", async () => {
    const s = await listen("0.0.0.0");
    expect(probe("127.0.0.3", portOf(s)).listens).toBe(true);
    await close(s);
  });

  (ipv6 ? test : test.skip)("IPv6: ::1, and a dual-stack :: listener reached through 127.0.0.1", async () => {
    const a = await listen("::1");
    try {
      expect(probe("::1", portOf(a)).listens).toBe(true);
      expect(probe("127.0.0.1", portOf(a)).listens).toBe(false);
    } finally {
      await close(a);
    }
    const b = await listen("::");
    const pb = portOf(b);
    try {
      expect(probe("127.0.0.1", pb).listens).toBe(true);
      // sock_diag sees it without the slow table; the slow table agrees
      expect(probe("127.0.0.1", pb, false).listens).toBe(true);
      expect(probe("::1", pb, false).listens).toBe(true);
      const both = runLua(`
        local L = require("memdiag.push.listening")
        local t = L.loopbackTarget("127.0.0.1", ${pb})
        return { diag = L.diagListens6(t), proc = L.tableListens("/proc/net/tcp6", true, t) }`);
      expect(both).toEqual({ diag: true, proc: true });
    } finally {
      await close(b);
    }
    expect(probe("::1", pb).listens).toBe(false);
  });

  (ipv6 ? test : test.skip)("sock_diag: a listener among more IPv6 listeners than one netlink answer holds", async () => {
    const many: net.Server[] = [];
    try {
      for (let i = 0; i < 400; i++) many.push(await listen("::1"));
      const ports = many.map(portOf);
      const r = runLua(`
        local L = require("memdiag.push.listening")
        local out = {}
        for _, p in ipairs({ ${ports[0]}, ${ports[199]}, ${ports[399]} }) do out[#out + 1] = L.diagListens6(L.loopbackTarget("::1", p)) end
        return arr(out)`);
      expect(r).toEqual([true, true, true]);
    } finally {
      for (const m of many) await close(m);
    }
  });

  test("hosts other than loopback are not probed", () => {
    for (const h of ["10.1.2.3", "example.com", "128.0.0.1", "127.0.0.300"]) expect(probe(h, 9146).target).toBe(false);
  });

  test("the kernel lists every listener before any other socket (the probe stops at the first non-listener)", async () => {
    // established connections on top of the listeners, so both kinds are in the table
    const s = await listen("127.0.0.1");
    const peers: net.Socket[] = [];
    s.on("connection", (c) => peers.push(c));
    const clients = await Promise.all(Array.from({ length: 3 }, () => new Promise<net.Socket>((r) => { const c = net.connect(portOf(s), "127.0.0.1", () => r(c)); })));
    for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      const states = fs.readFileSync(f, "utf8").trim().split("\n").slice(1).map((l) => l.trim().split(/\s+/)[3]);
      const firstOther = states.findIndex((st) => st !== "0A");
      if (firstOther >= 0) expect(states.slice(firstOther).includes("0A")).toBe(false);
      if (f.endsWith("tcp")) expect(firstOther).toBeGreaterThan(0);
    }
    for (const c of clients) c.destroy();
    for (const c of peers) c.destroy();
    await close(s);
  });
});

describe("listening-socket probe on crafted tables", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-listen-"));
  const HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
  const row = (i: number, addr: string, port: number, st: string) =>
    `${String(i).padStart(4)}: ${addr}:${port.toString(16).toUpperCase().padStart(4, "0")} 00000000:0000 ${st} 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n`;
  function table(name: string, rows: string[]): string {
    const f = path.join(dir, name);
    fs.writeFileSync(f, HEAD + rows.join(""));
    return f;
  }
  function verdict(f: string, port: number): { r: boolean | null; lines: number } {
    return runLua(`
      local L = require("memdiag.push.listening")
      local t = L.loopbackTarget("127.0.0.1", ${port})
      local r = L.tableListens(${luaStr(f)}, false, t)
      if r == nil then r = NULL end
      return { r = r, lines = L.lastLineCount() }`);
  }

  test("found among many listeners spanning several reads; stops at the first non-listener", () => {
    const rows = Array.from({ length: 500 }, (_, i) => row(i, "0100007F", 1000 + i, "0A"));
    expect(verdict(table("many", rows), 1499)).toEqual({ r: true, lines: 500 });
    const after = [...rows.slice(0, 10), row(10, "0100007F", 5000, "01"), row(11, "0100007F", 6000, "0A")];
    // a listener after an established socket is not in the kernel's order: not looked at
    expect(verdict(table("after", after), 6000)).toEqual({ r: false, lines: 11 });
    expect(verdict(table("absent", rows), 999).r).toBe(false);
  });

  test("cannot tell: more listeners than the bound, an unexpected shape, an unreadable file", () => {
    const bound = runLua(`return require("memdiag.push.listening").MAX_LINES`) as number;
    const rows = Array.from({ length: bound + 5 }, (_, i) => row(i, "0100007F", 1, "0A"));
    expect(verdict(table("huge", rows), 2).r).toBeNull();
    expect(verdict(table("odd", ["   0: nonsense\n"]), 2).r).toBeNull();
    expect(verdict(path.join(dir, "nope"), 2).r).toBeNull();
  });
});
