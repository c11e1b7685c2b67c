import { applyConfig, config } from "./base/config";
import { decode } from "./base/json";
import { startLoop } from "./agent";
import { registerPushParam, startPush } from "./push/client";
import { startSamplerEndpoint } from "./http/sampler";
import { registerLuaParam, scheduleCensuses } from "./http/lua";

/**
 * Entry point from init_worker_by_lua (see nginx-conf/memdiag.conf). Only
 * schedules work: cosockets and sleeps are not allowed in init_worker.
 */
export function start(this: void, optionsJson?: string): void {
  if (ngx.config.subsystem !== "http") return;
  // /_memdiag parameters beyond the snapshot view: push=1, sampler=... (loads no native code until armed)
  registerPushParam();
  startSamplerEndpoint();
  registerLuaParam();
  if (optionsJson !== undefined) {
    const [opts, err] = decode(optionsJson);
    if (opts === undefined) {
      ngx.log(ngx.ERR, "memdiag: bad options JSON, using defaults: ", err);
    } else {
      const unknown = applyConfig(opts);
      if (unknown.length > 0) ngx.log(ngx.WARN, "memdiag: ignored unknown or mistyped options: ", unknown.join(", "));
    }
  }
  if (!ngx.shared[config.dict]) {
    ngx.log(ngx.ERR, `memdiag: lua_shared_dict ${config.dict} is missing; /_memdiag will only show this worker`);
  }
  startLoop();
  scheduleCensuses();
  if (config.control_plane_url !== "") startPush();
}
