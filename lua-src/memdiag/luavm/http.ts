import { Args, registerParam } from "../http/endpoint";
import { config } from "../config";
import { runCensus } from "./census";
import { keepCensus, serialisableCensus } from "./section";

/**
 * /_memdiag?lua=census: the answering worker counts its Lua heap now (luavm/census.ts) and
 * answers with it; its snapshots carry the latest census from then on (lua.census), so the
 * control plane keeps it as a series. It holds the collector meanwhile: it counts as changing
 * the worker (token needed from non-loopback clients).
 */
function act(this: void, args: Args): LuaMultiReturn<[number, unknown]> {
  if (args.lua !== "census") return $multi(400, `unknown lua action '${tostring(args.lua)}'; valid: census`);
  const c = runCensus(true, config.slice_ms);
  keepCensus(c);
  return $multi(c.ok ? 200 : 503, { pid: ngx.worker.pid(), census: serialisableCensus(c) });
}

registerParam("lua", "census = the answering worker counts its Lua heap by object type now (holds its collector, in ~1 ms slices)", "^%l+$", act);
