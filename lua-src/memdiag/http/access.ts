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
