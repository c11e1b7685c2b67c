/**
 * Every configuration key of memdiag.config.json with its type, default, range and
 * meaning: the agent's keys (the "agent" object, handed to each worker by
 * nginx-conf/memdiag.conf), the /_memdiag server's and the control plane's.
 * `npm run configure` and `memdiag serve` check a file against this table;
 * the agent starts from AGENT_DEFAULTS. Pure data: compiled by both compilers.
 */

export type KeyType = "number" | "string" | "boolean" | "string[]";

export interface KeySpec {
  type: KeyType;
  default: number | string | boolean | string[];
  /** inclusive range of a number */
  min?: number;
  max?: number;
  doc: string;
}

/** The agent's settings as the worker holds them (lua-src/memdiag/base/config.ts). */
export interface AgentConfig {
  interval_s: number;
  regions_every_s: number;
  slice_ms: number;
  dict: string;
  allow: string[];
  layouts_dir: string;
  layout_file: string;
  top_n: number;
  deep_interval_s: number;
  lua_census_every_s: number;
  control_plane_url: string;
  token: string;
  max_frame_bytes: number;
  reconnect_max_s: number;
  remote_reconnect_max_s: number;
  queue_max_snapshots: number;
  queue_max_bytes: number;
  instance: string;
}

export const AGENT_KEYS: { [K in keyof AgentConfig]: KeySpec } = {
  interval_s: { type: "number", default: 5, min: 0.1, max: 86400, doc: "seconds between collections" },
  regions_every_s: {
    type: "number", default: 5, min: 0, max: 86400,
    doc: "seconds between two classifications of the address space (the costliest, slowest-moving layer); collections in between carry the last one with its age; 0 = every collection",
  },
  slice_ms: { type: "number", default: 1, min: 0.01, max: 100, doc: "wall-clock budget of one slice of agent work before it yields to the event loop (ms)" },
  dict: { type: "string", default: "memdiag", doc: "lua_shared_dict holding every worker's latest snapshot" },
  allow: { type: "string[]", default: [], doc: "addresses (IPv4, IPv4 CIDR, IPv6 literal) allowed to read /_memdiag besides loopback" },
  layouts_dir: { type: "string", default: "", doc: "directory with layout files (<version>-<hash>.json); configure fills in the project's layouts/" },
  layout_file: { type: "string", default: "", doc: "force this layout file instead of choosing by nginx version and configure hash" },
  top_n: { type: "number", default: 10, min: 1, max: 1000, doc: "length of top-N lists (largest pools)" },
  deep_interval_s: { type: "number", default: 0, min: 0, max: 604800, doc: "seconds between automatic deep scans; 0 = only on demand" },
  lua_census_every_s: { type: "number", default: 0, min: 0, max: 604800, doc: "seconds between automatic Lua heap censuses (/_memdiag?lua=census); 0 = only on demand" },
  control_plane_url: { type: "string", default: "", doc: "control-plane websocket URL; empty = do not push (configure fills it in from control_plane when push is on)" },
  token: { type: "string", default: "", doc: "shared secret sent in hello (configure fills it in from the top-level token)" },
  max_frame_bytes: { type: "number", default: 1048576, min: 4096, max: 1073741824, doc: "largest websocket frame the agent sends (bytes)" },
  reconnect_max_s: {
    type: "number", default: 30, min: 0.5, max: 86400,
    doc: "cap of the reconnect delay (s) after a failed connection or handshake to a control plane on this host (while nothing listens there the agent only looks at the listening sockets)",
  },
  remote_reconnect_max_s: {
    type: "number", default: 300, min: 0.5, max: 86400,
    doc: "the same for a control plane on another host: every attempt while it is down makes nginx log a connect error",
  },
  queue_max_snapshots: { type: "number", default: 120, min: 1, max: 100000, doc: "snapshots kept while the control plane is away" },
  queue_max_bytes: { type: "number", default: 8388608, min: 65536, max: 1073741824, doc: "bytes of snapshots kept while the control plane is away" },
  instance: { type: "string", default: "", doc: "instance name shown in the control plane; empty = host:prefix" },
};

function defaultsOf<T>(keys: { [K in keyof T]: KeySpec }): T {
  const out: { [k: string]: unknown } = {};
  for (const k in keys) out[k] = keys[k].default;
  return out as T;
}

export const AGENT_DEFAULTS: AgentConfig = defaultsOf<AgentConfig>(AGENT_KEYS);

/** memdiag.config.json outside "agent": the /_memdiag server inside nginx and the control plane. */
export interface FileConfig {
  listen: string;
  dict_size: string;
  token: string;
  control_plane: ControlPlaneConfig;
}
export interface ControlPlaneConfig {
  listen: string;
  db: string;
  push: boolean;
  full_resolution_hours: number;
  retention_days: number;
}

export const FILE_KEYS: { [K in Exclude<keyof FileConfig, "control_plane">]: KeySpec } = {
  listen: { type: "string", default: "127.0.0.1:9145", doc: "listen address of the /_memdiag server inside nginx" },
  dict_size: { type: "string", default: "16m", doc: "size of the lua_shared_dict that holds every worker's latest snapshot" },
  token: { type: "string", default: "", doc: "shared secret between agents and control plane; required when either listens beyond loopback" },
};

export const CONTROL_PLANE_KEYS: { [K in keyof ControlPlaneConfig]: KeySpec } = {
  listen: { type: "string", default: "127.0.0.1:9146", doc: "host:port the control plane listens on" },
  db: {
    type: "string", default: "",
    doc: "SQLite file; relative: to the directory `memdiag serve` runs in; empty: the state directory ($XDG_STATE_HOME/memdiag or ~/.local/state/memdiag)",
  },
  push: { type: "boolean", default: true, doc: "agents push snapshots to the control plane" },
  full_resolution_hours: { type: "number", default: 24, min: 0, max: 87600, doc: "keep every snapshot this long, then 1-minute buckets" },
  retention_days: { type: "number", default: 30, min: 0, max: 36500, doc: "keep 1-minute buckets this long" },
};

export const CONTROL_PLANE_DEFAULTS: ControlPlaneConfig = defaultsOf<ControlPlaneConfig>(CONTROL_PLANE_KEYS);

/**
 * Problems of one value against its spec ("" when it fits). Used where a file is read;
 * the agent itself only checks types (a wrong value reaching it is logged, not fatal).
 */
export function keyProblem(spec: KeySpec, v: unknown): string {
  if (spec.type === "string[]") {
    if (!Array.isArray(v) || (v as unknown[]).some((x) => typeof x !== "string")) return "expected an array of strings";
    return "";
  }
  if (typeof v !== spec.type) return `expected a ${spec.type}, got ${Array.isArray(v) ? "an array" : typeof v}`;
  if (spec.type === "number") {
    const n = v as number;
    if (n !== n) return "expected a number";
    if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) return `${n} is outside ${spec.min}..${spec.max}`;
  }
  return "";
}
