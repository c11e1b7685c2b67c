/** Query-parameter parsing shared by the REST handlers: unknown or repeated parameters are a 400. */
import type { Request } from "express";

export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** the query as single strings; 400 naming the valid parameters for anything else */
export function query(req: Request, valid: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const q = (req.query ?? {}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(q)) {
    if (!valid.includes(k)) {
      throw new HttpError(400, `unknown parameter '${k}'; valid: ${valid.length ? valid.join(", ") : "(none)"}`);
    }
    if (typeof v !== "string") throw new HttpError(400, `parameter '${k}' given more than once`);
    out[k] = v;
  }
  return out;
}

const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "600", "600s", "10m", "2h", "1d" → seconds */
export function parseDuration(v: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd]?)$/.exec(v.trim());
  if (!m) throw new HttpError(400, `${name}: expected a duration like 600, 10m, 2h (got '${v}')`);
  const s = Number(m[1]) * UNIT[m[2] || "s"];
  if (!(s > 0)) throw new HttpError(400, `${name}: must be > 0`);
  return s;
}

/** unix seconds, "now", "-10m" (relative to now) or an ISO date → unix seconds */
export function parseTime(v: string, name: string, now = Date.now() / 1000): number {
  const t = v.trim();
  if (t === "now") return now;
  if (/^-\d/.test(t)) return now - parseDuration(t.slice(1), name);
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t);
  const d = Date.parse(t);
  if (!Number.isNaN(d)) return d / 1000;
  throw new HttpError(400, `${name}: expected unix seconds, 'now', '-10m' or an ISO date (got '${v}')`);
}

export function parseId(v: string, name: string): number {
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new HttpError(400, `${name}: expected a snapshot id (integer), got '${v.slice(0, 40)}'`);
  return Number(v);
}

export function parseLimit(v: string | undefined, def: number, max: number): number {
  if (v === undefined) return def;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new HttpError(400, `limit: expected a positive integer, got '${v}'`);
  return Math.min(Number(v), max);
}
