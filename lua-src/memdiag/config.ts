/**
 * Agent configuration. The one place users change it is memdiag.config.json at the
 * project root (see README); `npm run configure` bakes it into nginx-conf/memdiag.conf,
 * which hands it to start() as JSON. Defaults live here and in scripts/config.ts.
 */
export interface Config {
  /** seconds between collections */
  interval_s: number;
  /**
   * seconds between two classifications of the address space (system.regions): the layer that
   * costs most per collection (smaps, mincore, allocator headers) and moves slowest; collections
   * in between carry the last one with its age. 0 = every collection. ?fresh=1 classifies (unless
   * it arrives while a collection runs: it then gets that one's, see agent.ts collectAndPublish).
   */
  regions_every_s: number;
  /** wall-clock budget of one collection slice before yielding to the event loop */
  slice_ms: number;
  /** lua_shared_dict used for cross-worker state */
  dict: string;
  /** addresses (IPv4, IPv4 CIDR, IPv6 literal) allowed besides loopback */
  allow: string[];
  /** directory with layout files (<version>-<hash>.json) */
  layouts_dir: string;
  /** force this layout file instead of choosing by version and configure hash */
  layout_file: string;
  /** length of top-N lists (largest pools) */
  top_n: number;
  /** seconds between automatic deep scans; 0 = only on demand */
  deep_interval_s: number;
  /** seconds between automatic Lua heap censuses (luavm/census.ts); 0 = only on demand */
  lua_census_every_s: number;
  /** control-plane websocket URL; empty = do not push */
  control_plane_url: string;
  token: string;
  /** max bytes of one websocket frame */
  max_frame_bytes: number;
  /**
   * cap (s) of the reconnect delay after a failed connection or handshake to a control plane on
   * this host (while nothing listens there the agent only looks at the listening sockets)
   */
  reconnect_max_s: number;
  /** the same for a control plane on another host: every attempt while it is down makes nginx log a connect error */
  remote_reconnect_max_s: number;
  /** bounded queue while the control plane is away */
  queue_max_snapshots: number;
  queue_max_bytes: number;
  /** instance name shown in the control plane; default host:prefix */
  instance: string;
}

export const defaults: Config = {
  interval_s: 5,
  slice_ms: 1,
  regions_every_s: 5,
  dict: "memdiag",
  allow: [],
  layouts_dir: "",
  layout_file: "",
  top_n: 10,
  deep_interval_s: 0,
  lua_census_every_s: 0,
  control_plane_url: "",
  token: "",
  max_frame_bytes: 1048576,
  reconnect_max_s: 30,
  remote_reconnect_max_s: 300,
  queue_max_snapshots: 120,
  queue_max_bytes: 8388608,
  instance: "",
};

/** One object for the worker's lifetime: modules keep a reference to it, so it is updated in place. */
export const config: Config = { ...defaults };

/** Merge options over defaults; unknown keys are reported, not silently dropped. */
export function applyConfig(opts: Partial<Config> & { [k: string]: unknown }): string[] {
  const c = config as unknown as { [k: string]: unknown };
  const unknown: string[] = [];
  for (const [k, v] of pairs(opts)) {
    if (c[k as string] === undefined) unknown.push(k as string);
    else if (type(v) !== type(c[k as string])) unknown.push(`${k} (expected ${type(c[k as string])})`);
    else c[k as string] = v;
  }
  return unknown;
}
