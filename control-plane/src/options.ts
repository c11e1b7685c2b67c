/**
 * `memdiag serve` settings: flags > environment (MEMDIAG_PORT, MEMDIAG_HOST,
 * MEMDIAG_DB, MEMDIAG_TOKEN) > memdiag.config.json (control_plane.listen,
 * control_plane.db, control_plane.full_resolution_hours/retention_days, token) >
 * defaults. Loopback unless told otherwise; a non-loopback host needs a token.
 * A relative database path (from any of them) is relative to the directory the command
 * runs in; without one the database lives in the state directory (defaultDbPath).
 */
import * as os from "os";
import * as path from "path";
import { loadConfig, configPath } from "../../scripts/config";
import { isLoopbackHost } from "./auth";
import { DEFAULT_SERVER, ServerOptions, serverOptions } from "./server";

export class UsageError extends Error {}

export interface ParsedFlags {
  values: Record<string, string>;
  bools: Set<string>;
  rest: string[];
}

/** --name value, --name=value; `bools` are flags without a value */
export function parseFlags(argv: readonly string[], valued: readonly string[], bools: readonly string[] = []): ParsedFlags {
  const out: ParsedFlags = { values: {}, bools: new Set(), rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      out.rest.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (bools.includes(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      out.bools.add(name);
      continue;
    }
    if (!valued.includes(name)) throw new UsageError(`unknown option --${name} (valid: ${[...valued, ...bools].map((v) => "--" + v).join(", ")})`);
    const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined) throw new UsageError(`--${name} needs a value`);
    out.values[name] = v;
  }
  return out;
}

function parsePort(v: string, where: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 65535) throw new UsageError(`${where}: not a port: '${v}'`);
  return Number(v);
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(listen);
  if (!m) throw new UsageError(`control_plane.listen: expected host:port, got '${listen}'`);
  return { host: m[1], port: parsePort(m[2], "control_plane.listen") };
}

/**
 * The database when nothing names one: $XDG_STATE_HOME/memdiag/memdiag.db, or
 * ~/.local/state/memdiag/memdiag.db (XDG Base Directory: a relative XDG_STATE_HOME is ignored).
 * Not the project folder: memdiag may be installed read-only, or shared by several users.
 */
export function defaultDbPath(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(env.HOME || os.homedir(), ".local", "state");
  return path.join(base, "memdiag", "memdiag.db");
}

export const SERVE_FLAGS = ["port", "host", "db", "token", "config", "max-frame-bytes", "static", "retention-days", "full-resolution-hours", "sync"];

export function resolveServeOptions(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): ServerOptions {
  const f = parseFlags(argv, SERVE_FLAGS);
  if (f.rest.length) throw new UsageError(`unexpected argument '${f.rest[0]}'`);
  const file = f.values.config ?? configPath();
  let cfg;
  try {
    cfg = loadConfig(file);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const listen = parseListen(cfg.control_plane.listen);
  const host = f.values.host ?? env.MEMDIAG_HOST ?? listen.host ?? DEFAULT_SERVER.host;
  const port = f.values.port !== undefined ? parsePort(f.values.port, "--port")
    : env.MEMDIAG_PORT !== undefined ? parsePort(env.MEMDIAG_PORT, "MEMDIAG_PORT") : listen.port;
  const named = f.values.db ?? env.MEMDIAG_DB ?? cfg.control_plane.db;
  const db = named ? path.resolve(cwd, named) : defaultDbPath(env);
  const token = f.values.token ?? env.MEMDIAG_TOKEN ?? cfg.token ?? "";
  const num = (name: string, def: number): number => {
    const v = f.values[name];
    if (v === undefined) return def;
    if (!/^\d+(\.\d+)?$/.test(v)) throw new UsageError(`--${name}: expected a number, got '${v}'`);
    return Number(v);
  };
  if (!isLoopbackHost(host) && !token) {
    throw new UsageError(`refusing to listen on ${host} without a token: memory data would be readable by anyone who can reach it. Set --token, MEMDIAG_TOKEN or "token" in ${file}, or listen on 127.0.0.1`);
  }
  const sync = (f.values.sync ?? "normal").toUpperCase();
  if (sync !== "NORMAL" && sync !== "FULL") throw new UsageError(`--sync: expected normal or full, got '${f.values.sync}'`);
  return serverOptions({
    host, port, db, token, synchronous: sync,
    maxFrameBytes: num("max-frame-bytes", DEFAULT_SERVER.maxFrameBytes),
    fullResolutionHours: num("full-resolution-hours", cfg.control_plane.full_resolution_hours),
    retentionDays: num("retention-days", cfg.control_plane.retention_days),
    staticDir: f.values.static,
  });
}
