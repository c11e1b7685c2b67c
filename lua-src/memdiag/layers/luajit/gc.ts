import { gcHoldMode } from "./gc-hold";
import { takeGcFloor } from "../luavm/gc-floor";

/**
 * Bytes held by this worker's LuaJIT GC (all Lua objects of the VM, agent included), what of it
 * survived the latest collections (layers/luavm/gc-floor.ts), and how the agent gives the collector
 * back after holding it (layers/luajit/gc-hold.ts).
 */
export function collectLuajit(): { gc_bytes: number; gc_floor_bytes?: number; gc_cycles: number; gc_hold: string } {
  const f = takeGcFloor();
  return { gc_bytes: Math.floor(collectgarbage("count") * 1024), gc_floor_bytes: f.floor_bytes, gc_cycles: f.cycles, gc_hold: gcHoldMode() };
}
