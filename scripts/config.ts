/**
 * memdiag.config.json: the one place users configure memdiag (agent, /_memdiag
 * server, control plane). Every key is optional; defaults are below.
 * MEMDIAG_CONFIG=/path/to/file points at another file.
 */
import * as fs from "fs";
import * as path from "path";

export interface AgentOptions {
  interval_s?: number;
  slice_ms?: number;
  regions_every_s?: number;
  dict?: string;
  allow?: string[];
  layouts_dir?: string;
  layout_file?: string;
  top_n?: number;
  deep_interval_s?: number;
  lua_census_every_s?: number;
  control_plane_url?: string;
  token?: string;
  max_frame_bytes?: number;
  reconnect_max_s?: number;
  remote_reconnect_max_s?: number;
  queue_max_snapshots?: number;
  queue_max_bytes?: number;
  instance?: string;
}

export interface MemdiagConfig {
  /** listen address of the /_memdiag server inside nginx */
  listen: string;
  /** size of the lua_shared_dict that holds every worker's latest snapshot */
  dict_size: string;
  /** shared secret between agents and control plane; required when either listens beyond loopback */
  token: string;
  control_plane: {
    /** host:port the control plane listens on */
    listen: string;
    /** SQLite file; relative: to the directory `memdiag serve` runs in; empty: the state directory ($XDG_STATE_HOME/memdiag or ~/.local/state/memdiag) */
    db: string;
    /** agents push snapshots to the control plane */
    push: boolean;
    /** keep every snapshot this long (hours), then 1-minute buckets for retention_days */
    full_resolution_hours: number;
    retention_days: number;
  };
  agent: AgentOptions;
}

/** The project root: the nearest folder with package.json above this file (works from dist/ and from sources). */
export const ROOT = ((): string => {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, "package.json")) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();

export const DEFAULT_CONFIG: MemdiagConfig = {
  listen: "127.0.0.1:9145",
  dict_size: "16m",
  token: "",
  control_plane: {
    listen: "127.0.0.1:9146",
    db: "",
    push: true,
    full_resolution_hours: 24,
    retention_days: 30,
  },
  agent: {},
};

export function configPath(): string {
  return process.env.MEMDIAG_CONFIG ?? path.join(ROOT, "memdiag.config.json");
}

function merge<T>(base: T, over: unknown, where: string): T {
  if (over === undefined) return base;
  if (typeof base !== "object" || base === null || Array.isArray(base)) return over as T;
  if (typeof over !== "object" || over === null) throw new Error(`${where}: expected an object`);
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over as Record<string, unknown>)) {
    if (where === "config" && k === "agent") {
      out[k] = { ...(out[k] as object), ...(v as object) };
    } else if (!(k in out)) {
      throw new Error(`${where}: unknown key '${k}' (known: ${Object.keys(out).join(", ")})`);
    } else {
      out[k] = merge(out[k], v, `${where}.${k}`);
    }
  }
  return out as T;
}

export function loadConfig(file = configPath()): MemdiagConfig {
  if (!fs.existsSync(file)) return structuredClone(DEFAULT_CONFIG);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return merge(structuredClone(DEFAULT_CONFIG), raw, "config");
}

function isLoopbackListen(listen: string): boolean {
  return /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+$/.test(listen) || listen.startsWith("unix:");
}

/** The agent options as the worker receives them: control-plane URL and token filled in. */
export function agentOptions(cfg: MemdiagConfig): AgentOptions {
  const a: AgentOptions = { ...cfg.agent };
  if (a.token === undefined && cfg.token) a.token = cfg.token;
  if (a.control_plane_url === undefined && cfg.control_plane.push) {
    a.control_plane_url = `ws://${cfg.control_plane.listen}/ingest`;
  }
  if (a.layouts_dir === undefined) a.layouts_dir = path.join(ROOT, "layouts");
  return a;
}

/** Refuse a configuration that would expose memory data beyond loopback without a token. */
export function checkExposure(cfg: MemdiagConfig): string[] {
  const problems: string[] = [];
  if (!isLoopbackListen(cfg.listen) && !(cfg.agent.allow && cfg.agent.allow.length > 0)) {
    problems.push(`listen ${cfg.listen} is not loopback: also set agent.allow to the clients that may read /_memdiag`);
  }
  if (!isLoopbackListen(cfg.control_plane.listen) && !cfg.token) {
    problems.push(`control_plane.listen ${cfg.control_plane.listen} is not loopback: set "token"`);
  }
  return problems;
}

/** Allowed but worth saying: a /_memdiag reachable beyond loopback without a token. */
export function exposureWarnings(cfg: MemdiagConfig): string[] {
  const warnings: string[] = [];
  const remote = !isLoopbackListen(cfg.listen) || (cfg.agent.allow ?? []).length > 0;
  if (remote && !agentOptions(cfg).token) {
    warnings.push(
      `/_memdiag is open beyond loopback (listen ${cfg.listen}, allow ${JSON.stringify(cfg.agent.allow ?? [])}) and no "token" is set: ` +
        `allowlisted clients can read snapshots, but sampler=arm|disarm|clear, deep=1 and fresh=1 are refused to them until "token" is set`,
    );
  }
  return warnings;
}
