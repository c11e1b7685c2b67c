import { config } from "../config";

/**
 * While a control plane this host cannot see is unreachable, one worker of the instance at a
 * time tries to connect; the others wait for its turn to end. Each failed connect there makes
 * nginx log an [error] (lua_socket_log_errors), so a gateway with 16 workers logs an outage
 * like a gateway with one. The turn is a shared-dict key holding the trying worker's pid, set
 * to expire shortly after that worker's next attempt: a worker that exits (reload) or stops
 * trying leaves nothing behind for long.
 */
const KEY = "push:remote_turn";

/** flags of the key: the holder's last attempt failed (waiting workers then count as failing too) */
const FAILED = 1;

function dict(): ngx.SharedDict | undefined {
  return ngx.shared[config.dict];
}

/**
 * Whether this worker may try now, for at most `holdS` (no dict: every worker tries on its
 * own); when it may not, whether the worker trying has failed already.
 */
export function takeTurn(holdS: number): LuaMultiReturn<[boolean, boolean]> {
  const d = dict();
  if (!d) return $multi(true, false);
  const me = ngx.worker.pid();
  const [holder, flags] = d.get(KEY);
  if (holder === me) {
    d.set(KEY, me, holdS, flags);
    return $multi(true, false);
  }
  if (holder !== undefined) return $multi(false, flags === FAILED);
  const [ok] = d.add(KEY, me, holdS);
  return $multi(ok, false);
}

/** After a failed attempt: keep the turn until just after the next one. */
export function holdTurn(holdS: number): void {
  const d = dict();
  if (d) d.set(KEY, ngx.worker.pid(), holdS, FAILED);
}

/** Connected (or stopping): the next worker may try right away. */
export function endTurn(): void {
  const d = dict();
  if (!d) return;
  const [holder] = d.get(KEY);
  if (holder === ngx.worker.pid()) d.delete(KEY);
}
