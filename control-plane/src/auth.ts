/**
 * Who may talk to the control plane. With a token configured:
 *  - agents must send it in hello (every agent, loopback or not);
 *  - HTTP clients (API, /metrics, static files) and /live consoles that are not on
 *    loopback must present it: `Authorization: Bearer <token>`, or HTTP Basic with
 *    the token as password (browsers), or for /live the websocket subprotocol
 *    `bearer.<token>` (browsers cannot set headers on a websocket).
 * Tokens are compared in constant time and never logged.
 */
import * as crypto from "crypto";
import type { IncomingMessage } from "http";
import type { Request, Response, NextFunction } from "express";

export function tokenEquals(given: unknown, expected: string): boolean {
  if (typeof given !== "string") return false;
  // hash both so lengths do not leak and timingSafeEqual gets equal-length buffers
  const a = crypto.createHash("sha256").update(given).digest();
  const b = crypto.createHash("sha256").update(expected).digest();
  return crypto.timingSafeEqual(a, b) && given.length === expected.length;
}

export function isLoopbackAddress(addr: string | undefined): boolean {
  if (!addr) return false;
  return addr === "::1" || addr.startsWith("127.") || addr.startsWith("::ffff:127.");
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** the token a request presents, if any */
export function presentedToken(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (typeof h === "string") {
    const m = /^\s*(Bearer|Basic)\s+(\S+)\s*$/i.exec(h);
    if (m && m[1].toLowerCase() === "bearer") return m[2];
    if (m) {
      const dec = Buffer.from(m[2], "base64").toString("utf8");
      const i = dec.indexOf(":");
      return i >= 0 ? dec.slice(i + 1) : dec;
    }
  }
  const proto = req.headers["sec-websocket-protocol"];
  if (typeof proto === "string") {
    for (const p of proto.split(",").map((s) => s.trim())) if (p.startsWith("bearer.")) return p.slice(7);
  }
  return undefined;
}

export function requestAllowed(req: IncomingMessage, token: string): boolean {
  if (!token) return true;
  if (isLoopbackAddress(req.socket.remoteAddress)) return true;
  return tokenEquals(presentedToken(req), token);
}

export function httpAuth(token: string) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (requestAllowed(req, token)) return next();
    const api = req.path.startsWith("/api/") || req.path === "/metrics";
    if (!api) res.setHeader("WWW-Authenticate", 'Basic realm="memdiag", charset="UTF-8"');
    res.status(401).json({ error: "unauthorized: send 'Authorization: Bearer <token>'" });
  };
}
