/** Who may read /_memdiag: loopback always, anything else only if allowlisted. */

function ipv4ToNumber(ip: string): number | undefined {
  const [a, b, c, d] = string.match(ip, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$");
  if (a === undefined) return undefined;
  const parts = [tonumber(a)!, tonumber(b)!, tonumber(c)!, tonumber(d)!];
  for (const p of parts) if (p > 255) return undefined;
  return ((parts[0] * 256 + parts[1]) * 256 + parts[2]) * 256 + parts[3];
}

export function isLoopback(addr: string): boolean {
  if (addr === "::1" || string.sub(addr, 1, 5) === "unix:") return true;
  if (string.sub(addr, 1, 7) === "::ffff:") addr = string.sub(addr, 8);
  return string.sub(addr, 1, 4) === "127." && ipv4ToNumber(addr) !== undefined;
}

/** entry: "10.0.0.5", "10.0.0.0/8" or an IPv6 literal (exact match) */
export function matches(addr: string, entry: string): boolean {
  const [net, bits] = string.match(entry, "^([%d%.]+)/(%d+)$");
  if (net === undefined) return addr === entry;
  const a = ipv4ToNumber(addr);
  const n = ipv4ToNumber(net);
  const b = tonumber(bits)!;
  if (a === undefined || n === undefined || b > 32) return false;
  const size = 2 ** (32 - b);
  return Math.floor(a / size) === Math.floor(n / size);
}

export function allowed(addr: string | undefined, allow: string[]): boolean {
  if (addr === undefined) return false;
  if (isLoopback(addr)) return true;
  for (const e of allow) if (matches(addr, e)) return true;
  return false;
}

/**
 * The address of the TCP peer as nginx accepted the connection. The realip module
 * (set_real_ip_from + real_ip_header X-Forwarded-For / proxy_protocol, often set at
 * http level and so inherited by memdiag's server) rewrites $remote_addr from what
 * the client sends; $realip_remote_addr keeps the connection's own address. Builds
 * without realip have no such variable (it reads as nil), and nothing there rewrites
 * $remote_addr. `read` is ngx.var's getter; a read that throws counts as absent.
 */
export function peerAddress(read: (this: void, name: string) => string | undefined): string | undefined {
  const [ok, real] = pcall(read, "realip_remote_addr");
  if (ok && type(real) === "string" && real !== "") return real as string;
  const [rok, addr] = pcall(read, "remote_addr");
  return rok && type(addr) === "string" ? (addr as string) : undefined;
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (type(header) !== "string") return undefined;
  const [tok] = string.match(header!, "^%s*[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$");
  return tok;
}

/**
 * given === expected in time that depends only on #expected: every byte is compared
 * whatever the first difference is, and a given token of another length is compared
 * as the expected one itself (same work) with the answer already false.
 */
export function tokenEquals(given: string, expected: string): boolean {
  let diff = given.length === expected.length ? 0 : 1;
  const g = diff === 0 ? given : expected;
  for (let i = 1; i <= expected.length; i++) diff = diff | (string.byte(g, i) ^ string.byte(expected, i));
  return diff === 0 && expected.length > 0;
}

/**
 * The access decision for one request: [status, error message] with status 0 = go on.
 * `action` names what the request would change in the worker ("sampler=arm", "deep=1"),
 * undefined for a read. Loopback peers may do everything; allowlisted peers may read, and
 * may change a worker only with the shared token.
 */
export function decide(
  peer: string | undefined,
  allow: string[],
  token: string,
  action: string | undefined,
  authorization: string | undefined,
): LuaMultiReturn<[number, string | undefined]> {
  if (!allowed(peer, allow)) {
    return $multi(403, `client ${peer ?? "?"} is not allowed (the connection's own address; X-Forwarded-For and PROXY protocol addresses are not used); add it to "allow" in memdiag.config.json`);
  }
  if (action === undefined || isLoopback(peer!)) return $multi(0, undefined);
  if (token === "") {
    return $multi(403, `${action} changes the worker and no token is configured: clients other than loopback may only read snapshots; set "token" in memdiag.config.json, run npm run configure and reload nginx`);
  }
  const given = bearerToken(authorization);
  if (given === undefined) return $multi(401, `${action} changes the worker: from ${peer} it needs "Authorization: Bearer <token>" (the "token" of memdiag.config.json)`);
  if (!tokenEquals(given, token)) return $multi(401, `${action}: the bearer token is not the configured one`);
  return $multi(0, undefined);
}
