import * as ffi from "ffi";

/**
 * Where this VM's lua_State is, for the readers of LuaJIT internals (layers/luajit/alloc.ts,
 * layers/luajit/gc-hold.ts): with GC64 (x86-64 LuaJIT 2.1, the Debian/OpenResty build) the word at
 * +16 of a lua_State points at global_State.
 */
export const gc64 = (() => {
  const [ok, v] = pcall(() => ffi.abi("gc64"));
  return ok && v === true;
})();

// A thread of this VM: the running coroutine (timers, requests), else one made once (plain luajit).
// Created lazily: ngx_lua forbids coroutine.create in init_worker_by_lua.
let probe: LuaThread | undefined;

/** address of a live lua_State of this VM (tostring of a thread is "thread: 0x..."), if it parses */
export function threadAddr(): number | undefined {
  let th = coroutine.running() as LuaThread | undefined;
  if (th === undefined) {
    if (probe === undefined) probe = coroutine.create(() => undefined);
    th = probe;
  }
  const [hex] = string.match(tostring(th), "0x(%x+)");
  return hex !== undefined ? tonumber(hex, 16) : undefined;
}
