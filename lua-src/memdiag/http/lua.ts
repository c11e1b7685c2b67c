import { Args, registerParam } from "../http/endpoint";
import { config } from "../base/config";
import { runCensus } from "../layers/luavm/census";
import { keepCensus, serialisableCensus } from "../layers/luavm/section";

/**
 * /_memdiag?lua=census: the answering worker counts its Lua heap now (layers/luavm/census.ts) and
 * answers with it; its snapshots carry the latest census from then on (lua.census), so the
 * control plane keeps it as a series. It holds the collector meanwhile: it counts as changing
 * the worker (token needed from non-loopback clients).
 */
function act(this: void, args: Args): LuaMultiReturn<[number, unknown]> {
  if (args.lua !== "census") return $multi(400, `unknown lua action '${tostring(args.lua)}'; valid: census`);
  // pid=N hands fresh and deep over to worker N; a census is not handed over (yet): say so rather than count another worker
  if (args.pid !== undefined && args.pid !== ngx.worker.pid()) return $multi(400, `lua=census runs in the worker that accepts the request (${ngx.worker.pid()}), not in pid ${args.pid}`);
  const c = runCensus(true, config.slice_ms);
  keepCensus(c);
  return $multi(c.ok ? 200 : 503, { pid: ngx.worker.pid(), census: serialisableCensus(c) });
}

/** /_memdiag?lua=census: added by start() */
export function registerLuaParam(): void {
  registerParam("lua", "census = the answering worker counts its Lua heap by object type now (holds its collector, in ~1 ms slices)", "^%l+$", act);
}

function periodic(this: void, premature: boolean): void {
  if (premature || ngx.worker.exiting()) return;
  const [ok, err] = pcall(() => keepCensus(runCensus(true, config.slice_ms)));
  if (!ok) ngx.log(ngx.ERR, "memdiag: Lua heap census failed: ", tostring(err));
  const [t, terr] = ngx.timer.at(config.lua_census_every_s, periodic);
  if (!t) ngx.log(ngx.ERR, "memdiag: Lua census timer: ", terr);
}

/** Periodic censuses when config.lua_census_every_s > 0 (off by default). */
export function scheduleCensuses(): void {
  if (config.lua_census_every_s <= 0) return;
  const [ok, err] = ngx.timer.at(config.lua_census_every_s, periodic);
  if (!ok) ngx.log(ngx.ERR, "memdiag: Lua census timer: ", err);
}
