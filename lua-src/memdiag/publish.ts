import { config } from "./base/config";

/**
 * Cross-worker state in the lua_shared_dict: each worker's latest snapshot (JSON,
 * stored as-is so answering for all workers needs no decode), expiring when the
 * worker stops refreshing it.
 */
const SNAP_PREFIX = "snap:";

function dict(): ngx.SharedDict | undefined {
  return ngx.shared[config.dict];
}

export function ttl(): number {
  return config.interval_s * 3 + 10;
}

export function publishSnapshot(pid: number, json: string): string | undefined {
  const d = dict();
  if (!d) return `lua_shared_dict ${config.dict} is not defined`;
  const [ok, err] = d.set(SNAP_PREFIX + pid, json, ttl());
  if (!ok) return `shared dict ${config.dict}: ${err} (snapshot of ${json.length} bytes; raise the dict size)`;
  return undefined;
}

export function snapshotOf(pid: number): string | undefined {
  const d = dict();
  if (!d) return undefined;
  const [v] = d.get(SNAP_PREFIX + pid);
  return v as string | undefined;
}

/** pids with a live snapshot, ascending */
export function publishedPids(): number[] {
  const d = dict();
  if (!d) return [];
  const pids: number[] = [];
  for (const k of d.get_keys(0)) {
    const [p] = string.match(k, "^snap:(%d+)$");
    if (p !== undefined) pids.push(tonumber(p)!);
  }
  table.sort(pids);
  return pids;
}

/**
 * Reload generation: the first worker of a new cycle bumps the counter; the
 * shared dict survives `nginx -s reload`, so the count is per nginx instance.
 */
export function generationFor(cycle: number): number {
  const d = dict();
  if (!d) return 0;
  const key = `gen:${cycle}`;
  const [ok] = d.add(key, -1);
  if (ok) {
    const [g] = d.incr("generation", 1, 0);
    d.set(key, g ?? 0);
    return g ?? 0;
  }
  for (let i = 0; i < 100; i++) {
    const [g] = d.get(key);
    if (g !== undefined && g !== -1) return g as number;
    ngx.sleep(0.001);
  }
  return 0;
}
