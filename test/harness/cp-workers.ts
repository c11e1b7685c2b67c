/**
 * Finding a worker and its stored snapshots in a running control plane: its key by pid, and the
 * first stored snapshot after a time that satisfies a condition on the full snapshot (a deep scan
 * or a Lua census that started after it: snapshots carry the last results until the next).
 */
import { Nginx } from "./nginx";
import { until } from "./until";
import { RunningCP, getJson } from "./control-plane";

export const workerKey = (cp: RunningCP, ngx: Nginx): Promise<string> => until("the worker connected", async () => {
  const pid = ngx.workerPids()[0];
  return ((await getJson(`${cp.base}/api/workers?state=live`)).body as any[]).find((w) => w.pid === pid)?.key as string | undefined;
});

/** the time of the worker's first stored snapshot after t whose full snapshot passes `ok` (of those deep, with `deep`) */
export const storedAfter = (cp: RunningCP, key: string, t: number, what: string, ok: (snapshot: any) => boolean, deep = false, ms = 60000): Promise<number> =>
  until(`${what} of ${key} after ${t}`, async () => {
    const list = (await getJson(`${cp.base}/api/workers/${encodeURIComponent(key)}/snapshots?from=${t}`)).body as any[];
    for (const s of list.filter((x) => x.time > t && (!deep || x.deep))) {
      const full = (await getJson(`${cp.base}/api/snapshots/${s.id}`)).body.snapshot;
      if (ok(full)) return s.time as number;
    }
    return undefined;
  }, ms, 500);

/** a Lua heap census that started after t */
export const censusAfter = (cp: RunningCP, key: string, t: number): Promise<number> =>
  storedAfter(cp, key, t, "a Lua census", (s) => s.lua?.census?.ok === true && s.lua.census.time > t);

/** a deep scan that started after t */
export const deepAfter = (cp: RunningCP, key: string, t: number): Promise<number> =>
  storedAfter(cp, key, t, "a deep scan", (s) => s.scan?.started > t, true);
